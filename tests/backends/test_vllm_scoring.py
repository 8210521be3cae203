"""How the vLLM backend plans option scoring and sizes its CPU cache (no vLLM needed)."""

from __future__ import annotations

from sage_dialog.backends.vllm_backend import option_contexts


def test_single_token_options_share_one_context_the_prompt():
    plan = option_contexts([[1, 2, 3]], [[[7], [8], [9], [7]]])
    assert plan == {(1, 2, 3): [7, 8, 9]}


def test_multi_token_options_add_one_context_per_shared_prefix():
    # options "7 8", "7 9" and "5": the prompt scores 7 and 5; prompt+7 scores 8 and 9
    plan = option_contexts([[1, 2]], [[[7, 8], [7, 9], [5]]])
    assert plan == {(1, 2): [7, 5], (1, 2, 7): [8, 9]}


def test_requests_with_the_same_prompt_merge_and_different_prompts_do_not():
    plan = option_contexts([[1], [1], [2]], [[[3]], [[4]], [[3, 3]]])
    assert plan == {(1,): [3, 4], (2,): [3], (2, 3): [3]}


def test_cpu_kv_cache_default_is_a_quarter_of_ram_at_most_4_gib():
    from sage_dialog.backends.vllm_backend import cpu_kv_cache_bytes

    assert cpu_kv_cache_bytes(8 * 2**30) == 2 * 2**30
    assert cpu_kv_cache_bytes(64 * 2**30) == 4 * 2**30


def test_the_engine_worker_gets_every_core_of_a_small_machine_while_it_starts(monkeypatch):
    import os

    from sage_dialog.backends.vllm_backend import _cpu_cores_for_the_worker

    key = "VLLM_CPU_NUM_OF_RESERVED_CPU"
    monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with _cpu_cores_for_the_worker(on_cpu=True):
        assert os.environ[key] == "0"  # the engine's processes inherit it while they start
    assert key not in os.environ
    with _cpu_cores_for_the_worker(on_cpu=False):  # a GPU build: vLLM's own choice
        assert key not in os.environ
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    with _cpu_cores_for_the_worker(on_cpu=True):  # one core of many for the scheduler is cheap
        assert key not in os.environ
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv(key, "1")
    with _cpu_cores_for_the_worker(on_cpu=True):  # the user's setting wins
        assert os.environ[key] == "1"
    assert os.environ[key] == "1"


def test_cpu_engine_defaults_fill_only_what_the_user_left_open(monkeypatch):
    from sage_dialog.backends.vllm_backend import CPU_BLOCK_SIZE, cpu_engine_defaults

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    got = cpu_engine_defaults({"dtype": "auto"})
    assert got["dtype"] == "float32" and got["block_size"] == CPU_BLOCK_SIZE == 32
    assert 0 < got["kv_cache_memory_bytes"] <= 4 * 2**30
    assert cpu_engine_defaults({"dtype": "bfloat16", "block_size": 128, "kv_cache_memory_bytes": 2**30}) == {}
    assert "kv_cache_memory_bytes" not in cpu_engine_defaults({"gpu_memory_utilization": 0.5})
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert "kv_cache_memory_bytes" not in cpu_engine_defaults({})
