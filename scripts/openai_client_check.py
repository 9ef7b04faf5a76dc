#!/usr/bin/env python3
"""Drives `premoe serve` with the official `openai` Python client, as a real client would:
models, chat, streaming with usage, stop, seed, logprobs, the premoe extension field, text
completions and a refused field. Exits 1 on the first contract that does not hold.

Usage: pip install openai
       premoe serve models/demo-moe --store STORE --port 8080 &
       scripts/openai_client_check.py [--base-url http://127.0.0.1:8080/v1] [--api-key KEY]
"""
import argparse
import sys

import openai
from openai import OpenAI


def check(condition, what):
    print(("ok    " if condition else "FAIL  ") + what)
    if not condition:
        sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    parser.add_argument("--api-key", default="none")
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)

    models = client.models.list()
    model = models.data[0].id
    check(len(models.data) == 1, f"models.list: {model}")

    messages = [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"}]
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, temperature=0, max_tokens=16)
    chat = raw.parse()
    task = raw.headers.get("x-premoe-task")
    check(chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens <= 16,
          f"chat: {chat.choices[0].message.content!r} finish={chat.choices[0].finish_reason} task={task}")
    check(task is not None and chat.model_extra["premoe"]["task"] == task, "x-premoe-task header = body premoe.task")

    chunks = list(client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    check(text == chat.choices[0].message.content, f"stream text equals the non-streamed text ({len(chunks)} chunks)")
    check(usage is not None and usage.completion_tokens == chat.usage.completion_tokens and not chunks[-1].choices,
          f"stream usage chunk: {usage}")

    free = chat.choices[0].message.content
    if len(free) >= 6:
        stop = free[3:5]
        cut = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16, stop=[stop])
        check(cut.choices[0].message.content == free[:free.index(stop)] and cut.choices[0].finish_reason == "stop",
              f"stop {stop!r}: {cut.choices[0].message.content!r}")
    else:
        print(f"skip  stop: the greedy answer {free!r} is too short to cut")

    sampled = [client.chat.completions.create(model=model, messages=messages, temperature=1.0, top_p=0.95, seed=42,
                                              max_tokens=12).choices[0].message.content for _ in range(2)]
    check(sampled[0] == sampled[1], f"seed 42 twice: {sampled[0]!r}")

    lp = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=4, logprobs=True,
                                        top_logprobs=3)
    content = lp.choices[0].logprobs.content
    check(len(content) == lp.usage.completion_tokens and all(len(t.top_logprobs) == 3 for t in content),
          f"logprobs: {[(t.token, round(t.logprob, 3)) for t in content]}")

    task = models.data[0].model_extra["premoe"]["tasks"][0]
    forced = client.chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=2,
                                                              extra_body={"premoe": {"task": task}})
    check(forced.headers.get("x-premoe-task") == task, f"extra_body premoe.task={task} is honoured")

    completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=6, temperature=0)
    check(completion.object == "text_completion", f"completions: {completion.choices[0].text!r}")

    try:
        client.chat.completions.create(model=model, messages=messages, extra_body={"frobnicate": 1})
        check(False, "an unknown field is refused")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "frobnicate", f"unknown field refused: {e.body.get('message')}")
    print("all checks passed")


if __name__ == "__main__":
    main()
