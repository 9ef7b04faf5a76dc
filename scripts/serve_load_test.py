#!/usr/bin/env python3
"""Bounded load test of `premoe serve`: N concurrent streams of mixed-task prompts (taken from
data/tasks/<task>/test.jsonl) for a fixed time, then it stops by itself. Samples the server's RSS
(/proc/PID/status) and its own accounting (/health) twice a second, and reports errors, p50/p99
time to first token, aggregate tokens/s, budget overruns and the expert cache hit rate as JSON.

Usage: scripts/serve_load_test.py --port 8080 --pid PID [--streams 16 | --streams 1,16 --rounds 3] [--seconds 60]
           [--tasks gsm8k,boolq,ai2_arc,piqa] [--max-tokens 32]
A list of stream counts runs each in turn against the same server (interleaved rounds on a shared
machine) and reports each one's tokens/s over the first's. Each run also reports where the
engine thread's time went (`time_split`: prompt prefill, decode passes, sampling, streaming out),
the CPU the server and this load generator used (`cpu_cores_busy`, with the share of the
machine's time its hypervisor gave to other guests), and how the engine split its steps over
the threads (`sequence_split_steps`, `split_ms_per_token` with `--batch-split auto`).
Standard library only. The server must be running (premoe serve ... --max-concurrency >= streams).
"""
import argparse
import http.client
import json
import os
import random
import statistics
import threading
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prompts(task, limit=50):
    out = []
    for line in (ROOT / "data/tasks" / task / "test.jsonl").read_text().splitlines()[:limit]:
        row = json.loads(line)
        text = row.get("question") or row.get("goal") or row.get("sentence") or row.get("passage") or row.get("text")
        if isinstance(text, dict):
            text = text.get("stem")
        if text:
            out.append(str(text)[:400])
    return out


def health(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/health")
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def stream_once(port, prompt, max_tokens, seed, headers):
    """One streamed chat completion: (ttft, tokens, seconds, task, error)."""
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": max_tokens,
                       "temperature": 0.7, "seed": seed, "stream_options": {"include_usage": True}})
    start = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        if response.status != 200:
            return None, 0, time.time() - start, None, f"{response.status} {response.read()[:200]!r}"
        task = response.getheader("x-premoe-task")
        ttft = None
        tokens = 0
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                return ttft, tokens, time.time() - start, task, str(event["error"])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if ttft is None and choice.get("delta", {}).get("content"):
                    ttft = time.time() - start
        return ttft, tokens, time.time() - start, task, None
    except Exception as e:  # noqa: BLE001 - every failure is counted as an error
        return None, 0, time.time() - start, None, repr(e)
    finally:
        conn.close()


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks():
    """(steal, total) clock ticks of all CPUs so far (/proc/stat): time the hypervisor gave to others."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def run(port, pid, streams, seconds, tasks, max_tokens, headers):
    pool = [(t, p) for t in tasks for p in prompts(t)]
    random.seed(1)
    results, lock = [], threading.Lock()
    samples = {"rss": [], "accounted": [], "running": [], "queued": []}
    stop_at = time.time() + seconds
    done = threading.Event()

    def worker(i):
        n = 0
        while time.time() < stop_at:
            task, prompt = pool[(i * 7919 + n * 104729) % len(pool)]
            r = stream_once(port, prompt, max_tokens, i * 1000 + n, headers)
            with lock:
                results.append((task,) + r)
            n += 1

    def sampler():
        while not done.is_set():
            try:
                samples["rss"].append(rss(pid))
                h = health(port)
                samples["accounted"].append(h["accounted_bytes"])
                samples["running"].append(h["running"])
                samples["queued"].append(h["queued"])
            except Exception:  # noqa: BLE001
                pass
            done.wait(0.5)

    wait_idle(port)
    h0 = health(port)
    s = threading.Thread(target=sampler)
    s.start()
    begin = time.time()
    server_cpu0, client_cpu0, ticks0 = cpu_seconds(pid), sum(os.times()[:2]), machine_ticks()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - begin
    server_cpu, client_cpu = cpu_seconds(pid) - server_cpu0, sum(os.times()[:2]) - client_cpu0
    ticks1 = machine_ticks()
    steal = (ticks1[0] - ticks0[0]) / max(1, ticks1[1] - ticks0[1])
    done.set()
    s.join()
    h1 = health(port)
    ok = [r for r in results if r[5] is None]
    ttfts = sorted(r[1] for r in ok if r[1] is not None)
    tokens = sum(r[2] for r in ok)
    hits = h1["expert_cache_hits"] - h0["expert_cache_hits"]
    misses = h1["expert_cache_misses"] - h0["expert_cache_misses"]
    budget = h1.get("budget_bytes")

    def pct(q):
        return ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else None

    return {
        "streams": streams, "seconds": round(wall, 2), "requests": len(results), "errors": len(results) - len(ok),
        "error_examples": [r[5] for r in results if r[5]][:3],
        "tasks_served": {t: sum(1 for r in ok if r[4] == t) for t in sorted({r[4] for r in ok if r[4]})},
        "completion_tokens": tokens, "tokens_per_second": round(tokens / wall, 2),
        "ttft_p50_s": pct(0.5), "ttft_p99_s": pct(0.99), "ttft_mean_s": statistics.mean(ttfts) if ttfts else None,
        "rss_max_bytes": max(samples["rss"], default=0), "rss_samples": len(samples["rss"]),
        "accounted_max_bytes": max(samples["accounted"], default=0), "peak_accounted_bytes": h1["peak_accounted_bytes"],
        "budget_bytes": budget,
        "budget_overruns": sum(1 for a in samples["accounted"] if budget and a > budget)
        + (1 if budget and h1["peak_accounted_bytes"] > budget else 0),
        "expert_cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "mean_running": round(statistics.mean(samples["running"]), 2) if samples["running"] else None,
        "mean_queued": round(statistics.mean(samples["queued"]), 2) if samples["queued"] else None,
        "evictions": h1["evictions"] - h0["evictions"], "expert_bytes_loaded": h1["expert_bytes_loaded"] - h0["expert_bytes_loaded"],
        "cpu_cores_busy": {"server": round(server_cpu / wall, 3), "load_generator": round(client_cpu / wall, 3),
                           "machine": os.cpu_count(), "stolen_by_hypervisor": round(steal, 4)},
        "time_split": time_split(h0.get("engine_time"), h1.get("engine_time"), wall, tokens),
    }


def wait_idle(port, limit=30):
    """Waits until the server runs and queues nothing (a previous round's requests are gone)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        h = health(port)
        if h["running"] == 0 and h["queued"] == 0:
            return
        time.sleep(0.1)


def time_split(t0, t1, wall, tokens):
    """The engine thread's time during the run (from /health's engine_time), in seconds and in
    milliseconds per output token. Forward passes that ran a prompt also advanced the decoding
    sequences beside it; their prompt share is estimated by charging those decode rows at the
    decode-only passes' cost per row."""
    if not t0 or not t1 or not tokens:
        return None
    d = {k: t1[k] - t0.get(k, 0) for k in t1 if isinstance(t1[k], (int, float))}
    per_row = d["decode_step_seconds"] / d["decode_rows"] if d["decode_rows"] else 0
    prefill = max(0.0, d["prompt_step_seconds"] - d["prompt_step_decode_rows"] * per_row)
    decode = d["decode_step_seconds"] + (d["prompt_step_seconds"] - prefill)
    parts = {"prefill_estimated": prefill, "decode_steps": decode, "sampling": d["sampling_seconds"],
             "emit": d["emit_seconds"], "admission": d["admission_seconds"]}
    busy = sum(parts.values())
    parts["engine_idle"] = max(0.0, wall - busy)
    # Retrieval probes run on the request handlers' threads, beside the engine thread's steps.
    parts["retrieval_beside_engine"] = d.get("retrieval_seconds", 0.0)
    return {
        "seconds": {k: round(v, 3) for k, v in parts.items()},
        "ms_per_output_token": {k: round(1000 * v / tokens, 4) for k, v in parts.items()},
        "prompts": d.get("prompts"), "prompt_tokens": d["prompt_tokens"], "prompt_tokens_per_second_estimated": round(d["prompt_tokens"] / prefill, 1) if prefill else None,
        "decode_rows": d["decode_rows"] + d["prompt_step_decode_rows"],
        "decode_ms_per_row_decode_only_steps": round(1000 * per_row, 4),
        "mean_decode_batch": round(d["decode_rows"] / d["decode_steps"], 2) if d["decode_steps"] else None,
        "prompt_steps": d["prompt_steps"], "decode_steps": d["decode_steps"],
        "sequence_split_steps": d.get("sequence_split_steps"),
        "split_ms_per_token": t1.get("split_ms_per_token"),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--pid", type=int, required=True, help="the server's process id (RSS sampling)")
    parser.add_argument("--streams", default="16",
                        help="concurrent streams; a comma list (1,16) runs each in turn and reports the ratios to the first")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the list of stream counts (interleaved pairs)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tasks", default="gsm8k,boolq,ai2_arc,piqa")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--api-key")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    counts = [int(c) for c in args.streams.split(",")]
    if len(counts) == 1 and args.rounds == 1:
        print(json.dumps(run(args.port, args.pid, counts[0], args.seconds, args.tasks.split(","), args.max_tokens, headers),
                         indent=1))
        return
    rounds = []
    for _ in range(args.rounds):
        reports = [run(args.port, args.pid, c, args.seconds, args.tasks.split(","), args.max_tokens, headers) for c in counts]
        base = reports[0]["tokens_per_second"]
        rounds.append({"reports": reports, "throughput_ratio_to_first": [round(r["tokens_per_second"] / base, 3) if base else None
                                                                          for r in reports]})
        print(json.dumps({"streams": counts, "tokens_per_second": [r["tokens_per_second"] for r in reports],
                          "ratios": rounds[-1]["throughput_ratio_to_first"]}), file=sys.stderr, flush=True)
    print(json.dumps(rounds, indent=1))  # one JSON document on stdout; the per-round lines went to stderr


if __name__ == "__main__":
    main()
