-- wrk script for `premoe serve`: short text completions (one token, greedy; retrieval picks the
-- task); wrk counts non-2xx answers itself.
-- wrk -t2 -c8 -d20s -s scripts/wrk_completion.lua http://127.0.0.1:8080/v1/completions
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"prompt": "The capital of France is", "max_tokens": 1, "temperature": 0}'
