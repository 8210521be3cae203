"""Measure how often forced actions are followed.

For every context and every forced action, generate --n replies with the action prefilled and let a
judge read the reply text (tags removed): does it carry out the action? Prints rates per action with
95% intervals and writes the full report (every reply and verdict) as JSON.

Contexts: --contexts FILE (.jsonl of Dialog records: each dialog up to its last user turn; .txt: one
user message per line) or --sandbox-contexts N (openings from the built-in sandbox world).
Actions: --action "a_motivation=joke a_emotion=playful" (repeatable); with --judge oracle and no
--action, every action of the sandbox world. Judge: "oracle" (the sandbox's action classifier) or a
backend spec for an LLM judge (yes/no, by log-probabilities when the backend can score).

Example:
  sage-dialog steerability --model hf:runs/sft/merged --sandbox-contexts 20 --judge oracle -o steer.json
  sage-dialog steerability --model hf:runs/sft/merged --contexts seeds.txt \\
      --action "a_motivation=joke a_emotion=playful" --judge openai:gpt-4o-mini --n 2 -o steer.json
"""

from __future__ import annotations

import argparse

from pydantic import Field

from sage_dialog.commands.model_flags import ModelSettings


class SteerabilitySettings(ModelSettings):
    """Settings of ``sage-dialog steerability``."""

    contexts: str | None = Field(None, description="contexts: .jsonl of Dialog records or .txt with one user "
                                 "message per line")
    sandbox_contexts: int | None = Field(None, description="use N openings of the sandbox world")
    action: list[str] | None = Field(None, description="a forced action (repeatable)")
    judge: str = Field("oracle", description="'oracle' or a backend spec for an LLM judge")
    n: int = Field(1, description="replies per (context, action)")
    limit: int | None = Field(None, description="use at most this many contexts")
    output: str = Field(description="report JSON file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.config_flags import OUT
    from sage_dialog.commands.model_flags import add_model_arguments

    add_model_arguments(parser, SteerabilitySettings, flags={"output": OUT}, extra={
        "sandbox_contexts": {"metavar": "N"}, "action": {"metavar": "'KEY=VALUE ...'"},
        "contexts": {"metavar": "FILE"}, "judge": {"metavar": "SPEC"}, "output": {"metavar": "FILE"}})


def run(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from sage_dialog.commands.model_flags import backend_from_args, model_settings, sampling_from_args
    from sage_dialog.core import io as sio
    from sage_dialog.core.errors import UserError, where
    from sage_dialog.core.schema import Dialog, Tags
    from sage_dialog.roles.rollout import history_messages
    from sage_dialog.stages import steerability
    from sage_dialog.stages.steerability import ClassifierJudge, LLMJudge, format_report

    args = model_settings(SteerabilitySettings, args)
    if (args.contexts is None) == (args.sandbox_contexts is None):
        raise UserError("give one of --contexts FILE or --sandbox-contexts N")
    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}")
    sio.check_paths(inputs=[None if args.sandbox_contexts is not None else args.contexts], files=[args.output])
    sampling = sampling_from_args(args)
    # contexts
    contexts: list[list[dict[str, str]]] = []
    if args.sandbox_contexts is not None:
        if args.sandbox_contexts < 1:
            raise UserError("--sandbox-contexts must be at least 1")
        from sage_dialog.roles.factory import oracle_provider

        contexts = [[{"role": "user", "content": t}]
                    for t in oracle_provider().seed_openings(args.sandbox_contexts, args.seed or 0)]
    else:
        p = Path(args.contexts)
        if p.suffix == ".jsonl":
            for i, d in enumerate(sio.read_jsonl(p, Dialog), 1):
                last_user = max((k for k, t in enumerate(d.turns) if t.role == "user"), default=None)
                if last_user is None:
                    raise UserError(f"{where(p, i, 'turns')}: dialog {d.id} has no user turn")
                contexts.append(history_messages(d.turns[: last_user + 1]))
        else:
            try:
                lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
            except FileNotFoundError:
                raise UserError(f"{p}: no such file") from None
            contexts = [[{"role": "user", "content": ln}] for ln in lines]
        if not contexts:
            raise UserError(f"{p}: no contexts")
    if args.limit:
        contexts = contexts[: args.limit]
    if args.system:
        contexts = [[{"role": "system", "content": args.system}, *c] for c in contexts]
    # actions
    steerability.parse_actions(args.action or [], what="--action")  # a bad one stops before any model loads
    actions: list[Tags] = []
    if not args.action:
        if args.judge != "oracle":
            raise UserError("give at least one --action (the sandbox's actions are the default only with --judge oracle)")
        from sage_dialog.roles.factory import oracle_provider

        actions = oracle_provider().actions()
    # judge and model
    judge: object
    judge_backend = None
    if args.judge == "oracle":
        from sage_dialog.roles.factory import oracle

        judge = ClassifierJudge(oracle("action"), name="oracle")
    else:
        from sage_dialog.backends.base import load_backend

        judge_backend = load_backend(args.judge)
        judge = LLMJudge(judge_backend)
    backend = backend_from_args(args)
    settings = steerability.Settings(actions=args.action or [], contexts=None, n=args.n,  # contexts: cut above
                                     sampling={k: v for k, v in sampling.as_dict().items() if k != "stop" or v})
    try:
        res = steerability.run(settings, inputs=steerability.Inputs(model=backend, contexts=contexts, judge=judge,
                                                                    actions=actions),  # type: ignore[arg-type]
                               out=Path(args.output), progress=True)
    finally:
        asyncio.run(backend.aclose())
        if judge_backend is not None:
            asyncio.run(judge_backend.aclose())
    print(format_report(res.report))
    print(f"report: {args.output}")
    return 0
