"""slurm/config.yaml renders to the intended sbatch options, without a cluster.

The profile is read by Snakemake's own command-line parser (YTE, environment variables, set-resources)
and each rule's resources go through snakemake-executor-plugin-slurm's own sbatch builder
(get_submit_command + set_gres_string, as in Executor.run_job). The -A/-p arguments need sacctmgr/scontrol
in the plugin, so for those the tests check the resource values the plugin receives.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake.cli import parse_args
from snakemake.iocontainers import ResourceList
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

PROFILE = Path(__file__).resolve().parents[2] / "slurm"
GPU_RULES = ("finetune", "model_stock_periodic", "greedy_soup", "evaluate")
FILE_SIZE_DEFAULTS = {"tmpdir", "disk_mb"}  # Snakemake's own input-size defaults, not read by the plugin


def profile_args(*cli):
    """The arguments of `snakemake --profile slurm <cli>` as Snakemake parses them."""
    _, args = parse_args(["--profile", str(PROFILE), *cli])
    return args


def job_threads(args, rule, rule_threads=1) -> int:
    """A job's threads: the profile's set-threads, else what the rule declares (1 unless it says otherwise)."""
    return args.set_threads[rule].value if rule in args.set_threads else rule_threads


def rule_resources(args, rule, threads) -> dict:
    """Default resources overlaid with the rule's set-resources, evaluated as for a job of that rule."""
    merged = {**args.default_resources, **args.set_resources.get(rule, {})}
    return {
        name: res.evaluate(wildcards={}, input=[], attempt=1, threads=threads, rulename=rule, async_run=None).value
        for name, res in merged.items()
        if name not in FILE_SIZE_DEFAULTS
    }


def sbatch_options(args, rule, resources, threads) -> list[str]:
    """The sbatch command line the plugin builds for one job of `rule` (account/partition left out)."""
    job = SimpleNamespace(name=rule, threads=threads, resources=ResourceList(fromdict=resources))
    validate_slurm_extra(job)  # raises for options the plugin manages itself (--gres, --mem, ...)
    params = {"run_uuid": "uuid", "slurm_logfile": "job.log", "comment_str": f"rule_{rule}",
              "account": "", "partition": "", "workdir": "/work"}
    settings = SimpleNamespace(requeue=args.slurm_requeue, no_requeue=False, qos=None, reservation=None)
    return shlex.split(get_submit_command(job, params, settings=settings) + set_gres_string(job))


TRAINING_RULES = ("finetune", "model_stock_periodic")


def with_rule_gpus(rule, resources, gpus=1) -> dict:
    """A training rule's own gpu resource (plan.training_gpus: the config's GPU count) under the profile's."""
    return {"gpu": gpus, **resources} if rule in TRAINING_RULES else resources


@pytest.mark.parametrize("rule", GPU_RULES)
def test_gpu_rules_ask_for_one_gpu_of_any_type_by_default(no_cluster_env, rule):
    args = profile_args()
    resources = with_rule_gpus(rule, rule_resources(args, rule, job_threads(args, rule)))
    options = sbatch_options(args, rule, resources, job_threads(args, rule))
    assert "--gpus=1" in options
    # 8 threads = 8 DataLoader workers per GPU
    assert "--cpus-per-task=8" in options and options[options.index("--mem") + 1] == "32000"
    # empty = not given: the plugin then uses the cluster's default partition and guesses the account
    assert resources["slurm_partition"] == "" and resources["slurm_account"] == ""


def test_cpu_rules_ask_for_no_gpu_and_their_threads(no_cluster_env):
    args = profile_args()
    for rule, rule_threads in (("make_world", 1), ("pretrain_demo", 2)):
        n = job_threads(args, rule, rule_threads)
        options = sbatch_options(args, rule, rule_resources(args, rule, n), n)
        assert not any(o.startswith(("--gpus", "--gres")) for o in options)
        assert f"--cpus-per-task={rule_threads}" in options and "--ntasks=1" in options
        assert options[options.index("--mem") + 1] == "8000" and options[options.index("-t") + 1] == "60"


def test_cluster_facts_come_from_the_environment(no_cluster_env):
    no_cluster_env.setenv("SLURM_ACCOUNT", "proj42")
    no_cluster_env.setenv("SLURM_PARTITION", "cpu")
    no_cluster_env.setenv("SLURM_GPU_PARTITION", "gpu")
    no_cluster_env.setenv("SLURM_GPU_MODEL", "a100")
    args = profile_args()
    for rule in GPU_RULES:
        resources = with_rule_gpus(rule, rule_resources(args, rule, job_threads(args, rule)))
        assert "--gpus=a100:1" in sbatch_options(args, rule, resources, job_threads(args, rule))
        assert (resources["slurm_partition"], resources["slurm_account"]) == ("gpu", "proj42")
    cpu = rule_resources(args, "merge_uniform_soup", job_threads(args, "merge_uniform_soup"))
    assert (cpu["slurm_partition"], cpu["slurm_account"]) == ("cpu", "proj42")


def test_gpu_partition_falls_back_to_the_partition(no_cluster_env):
    no_cluster_env.setenv("SLURM_PARTITION", "batch")
    args = profile_args()
    assert rule_resources(args, "finetune", job_threads(args, "finetune"))["slurm_partition"] == "batch"


def test_a_partition_named_like_a_python_builtin_stays_a_name(no_cluster_env):
    no_cluster_env.setenv("SLURM_PARTITION", "all")  # unquoted, Snakemake would evaluate it to all()
    assert rule_resources(profile_args(), "make_world", 1)["slurm_partition"] == "all"


def test_plugin_renders_model_and_count_as_one_gpus_option(no_cluster_env):
    """The plugin's mapping of gpu_model + gpu, which SLURM_GPU_MODEL relies on."""
    args = profile_args()
    resources = {**rule_resources(args, "finetune", 8), "gpu": 2, "gpu_model": "a100"}
    options = sbatch_options(args, "finetune", resources, 8)
    assert "--gpus=a100:2" in options and not any(o.startswith("--gres") for o in options)


@pytest.mark.parametrize("rule", TRAINING_RULES)
def test_training_gpus_come_from_the_rule_and_reach_sbatch_as_one_task(no_cluster_env, rule):
    """The profile leaves a training job's GPU count to the rule (the config's gpus), and a 4-GPU job is
    one task with 4 GPUs: its command starts the 4 ranks itself (torchrun), so no --ntasks-per-gpu."""
    args = profile_args()
    assert "gpu" not in args.set_resources[rule]
    options = sbatch_options(args, rule, with_rule_gpus(rule, rule_resources(args, rule, 8), gpus=4), 8)
    assert "--gpus=4" in options and not any(o.startswith(("--ntasks", "--gres")) for o in options)


@pytest.mark.parametrize("rule", ["finetune", "model_stock_periodic"])
def test_training_is_signalled_before_its_time_limit_and_requeued_on_preemption(no_cluster_env, rule):
    args = profile_args()
    options = sbatch_options(args, rule, rule_resources(args, rule, 8), 8)
    assert "--signal=TERM@300" in options and "--requeue" in options


def test_profile_settings(no_cluster_env):
    args = profile_args()
    assert args.executor == "slurm" and args.retries == 2 and args.rerun_incomplete and args.printshellcmds
    assert args.latency_wait == 60 and args.groups == {"evaluate": "evaluate"} and args.group_components == {
        "evaluate": 6}
    # each evaluation batch runs one evaluation at a time (a per-job pool, not tallied across jobs); no
    # limit on gpu, which Snakemake would impose on every job (a training job's 4 GPUs would become 1)
    assert args.resources["eval_slot"].value == 1 and args.set_resource_scopes == {"eval_slot": "local"}
    assert "gpu" not in args.resources and args.set_resources["evaluate"]["eval_slot"].value == 1
    assert args.rerun_triggers == profile_args("--rerun-triggers", "mtime", "params", "input", "software-env",
                                               "code").rerun_triggers  # the defaults, unchanged
