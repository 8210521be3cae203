"""How many served replies carry SAC tag text in ``content`` (issue 28).

Starts ``sage-dialog serve`` on a model (127.0.0.1, a free port), sends N chat requests through the
openai SDK (every other one streamed, seeded), prints each reply and its ``sage`` field, and counts the
replies whose ``content`` holds tag text. Usage::

    .venv/bin/python benchmarks/probe_served_tags.py DEMO_OUT/sft/model 20 1.0

Measured on the demo's M1 at temperature 1.0: 5 of 20 before ``sac.split_inner``, 0 of 20 after.
"""

import json
import re
import socket
import subprocess
import sys
import time

from openai import OpenAI

OPENINGS = ["I failed my exam today.", "My dog is sick and I am worried.", "I got a new job!", "hi",
            "I feel lonely tonight.", "Work is so stressful lately.", "I can't sleep.", "We won the match!",
            "My friend ignored me.", "I am so angry at my boss."]
TAG = re.compile(r"[ua]_(motivation|emotion|topic)|\{[^}]*:|\b(motivation|emotion)\s*:", re.I)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(c: OpenAI, name: str, msgs: list, seed: int, stream: bool) -> tuple[str, object]:
    """The reply's content and its ``sage`` field."""
    if not stream:
        r = c.chat.completions.create(model=name, messages=msgs, seed=seed)
        return r.choices[0].message.content or "", (r.choices[0].message.model_extra or {}).get("sage")
    parts, sage = [], None
    for ch in c.chat.completions.create(model=name, messages=msgs, stream=True, seed=seed):
        d = ch.choices[0].delta if ch.choices else None
        if d is not None and d.content:
            parts.append(d.content)
        extra = getattr(d, "model_extra", None) or {}
        sage = extra.get("sage") or sage
    return "".join(parts), sage


def main() -> None:
    model, n, temp = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    port = free_port()
    with open("/tmp/probe_served_tags.log", "w") as log:
        p = subprocess.Popen([sys.executable, "-m", "sage_dialog", "serve", "--model", f"hf:{model}", "--port",
                              str(port), "--temperature", str(temp), "-q"], stdout=subprocess.DEVNULL, stderr=log)
        c = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
        bad = 0
        try:
            for _ in range(240):
                try:
                    c.models.list()
                    break
                except Exception:
                    time.sleep(0.5)
            for i in range(n):
                msgs = [{"role": "user", "content": OPENINGS[i % len(OPENINGS)]}]
                content, sage = ask(c, f"hf:{model}", msgs, i, stream=i % 2 == 1)
                flag = bool(TAG.search(content))
                bad += flag
                print(json.dumps({"i": i, "stream": i % 2 == 1, "tagtext": flag, "content": content, "sage": sage}))
        finally:
            p.terminate()
            p.wait(30)
    print(f"{bad} of {n} replies carried tag text in content")


if __name__ == "__main__":
    main()
