"""Chat in the terminal with the latent visible and steerable.

Each reply streams after two lines showing the state the model read in your message and the action
it chose. Steer the next turn with /steer, regenerate with /regen, see alternatives with /alts N,
save with /save FILE (.jsonl: a Dialog record; .txt: the original SAGE transcript format).

Example:
  sage-dialog chat --model hf:runs/sft/merged
  sage-dialog chat --model hf:Qwen/Qwen2.5-0.5B-Instruct --adapter runs/sft/adapter --temperature 0.7
  you> I failed my exam again.
  you> /steer a_emotion=playful a_motivation=joke
  you> /regen
  you> /save my-dialog.jsonl
"""

from __future__ import annotations

import argparse

from pydantic import Field

from sage_dialog.commands.model_flags import ModelSettings


class ChatSettings(ModelSettings):
    """Settings of ``sage-dialog chat``."""

    stream: bool = Field(True, description="stream each reply as it is generated (--no-stream prints it whole)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from sage_dialog.commands.model_flags import add_model_arguments

    add_model_arguments(parser, ChatSettings)
    parser.add_argument(
        "--steer", nargs="+", metavar="KEY=VALUE", help="steer the first turn, e.g. a_emotion=playful"
    )


def run(args: argparse.Namespace) -> int:
    from sage_dialog.commands.model_flags import backend_from_args, model_settings, sampling_from_args
    from sage_dialog.interact.chat import ChatSession, repl
    from sage_dialog.roles.steering import parse_steering

    args = model_settings(ChatSettings, args)
    sampling = sampling_from_args(args)
    steering = parse_steering(args.steer, what="--steer")
    backend = backend_from_args(args)
    session = ChatSession(backend, system_prompt=args.system, sampling=sampling, stream=args.stream)
    session.steering = steering
    return repl(session)
