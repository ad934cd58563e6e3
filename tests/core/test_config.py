"""Config resolution order and validation messages."""

import pytest

from aime_core import config as c


def test_tier_presets_match_design_table():
    t1 = c.resolve_train(1, env={})
    assert (t1.domain, t1.task, t1.video_length, t1.img_size) == ("cartpole", "swingup", 10, 64)
    assert (t1.latent_dim, t1.hidden_dim, t1.context_dim, t1.max_components) == (18, 256, 128, 8)
    assert (t1.num_epochs, t1.batch_size, t1.lr, t1.amp) == (50, 16, 3e-4, False)
    assert (t1.save_every, t1.eval_every, t1.log_every) == (10, 5, 10)
    t2 = c.resolve_train(2, env={})
    assert (t2.domain, t2.task, t2.video_length, t2.img_size, t2.amp) == ("reacher", "easy", 20, 84, True)
    assert (t2.latent_dim, t2.hidden_dim, t2.context_dim, t2.max_components, t2.batch_size) == (
        36,
        512,
        256,
        15,
        32,
    )
    assert (t2.num_epochs, t2.lr, t2.save_every, t2.eval_every, t2.log_every) == (200, 2e-4, 20, 10, 50)
    t3 = c.resolve_train(3, env={})
    assert (t3.domain, t3.task, t3.video_length, t3.gradient_accumulation_steps, t3.amp) == (
        "humanoid",
        "walk",
        50,
        2,
        True,
    )
    assert (t3.num_epochs, t3.save_every, t3.eval_every, t3.log_every) == (500, 50, 25, 100)
    for t in (t1, t2, t3):
        assert t.context_dim == t.hidden_dim // 2


def test_collect_presets_per_tier():
    got = [
        (x.domain, x.task, x.num_episodes, x.max_steps, x.img_size)
        for x in (c.resolve_collect(n, env={}) for n in (1, 2, 3))
    ]
    assert got == [
        ("cartpole", "swingup", 50, 200, 64),
        ("reacher", "easy", 200, 500, 84),
        ("humanoid", "walk", 1000, 1000, 84),
    ]


def test_resolution_order_defaults_preset_env_flags():
    env = {"AIME_DOMAIN": "pendulum", "AIME_TASK": "swingup", "AIME_SEED": "42", "AIME_NUM_EPISODES": "7"}
    cfg = c.resolve_collect(1, env=env)
    assert (cfg.domain, cfg.seed, cfg.num_episodes, cfg.img_size) == ("pendulum", 42, 7, 64)
    assert cfg.data_path == "data/pendulum-swingup-tier1-seed42.hdf5"
    # explicit flags beat the environment
    cfg = c.resolve_collect(1, env=env, overrides={"num_episodes": 3, "seed": 5})
    assert (cfg.num_episodes, cfg.seed) == (3, 5)
    # the debug preset stacks on the tier but under env and flags
    cfg = c.resolve_train(2, preset="debug", env={"AIME_SEED": "3"}, overrides={"batch_size": 2})
    assert (cfg.domain, cfg.img_size, cfg.seed, cfg.batch_size) == ("reacher", 32, 3, 2)
    assert c.run_name(cfg) == "reacher-easy-tier2-seed3-debug"
    cfg = c.resolve_train(1, env={"AIME_DEBUG": "1", "AIME_DATA_PATH": "/tmp/x.hdf5", "WANDB_PROJECT": "p"})
    assert (cfg.debug, cfg.data_path, cfg.wandb_project) == (True, "/tmp/x.hdf5", "p")
    assert cfg.checkpoint_dir == "checkpoints/cartpole-swingup-tier1-seed0"


def test_unknown_domain_lists_valid_ones():
    with pytest.raises(c.ConfigError) as err:
        c.resolve_collect(1, overrides={"domain": "cartpol"}, env={})
    assert err.value.field == "domain"
    assert "cartpole" in str(err.value) and "humanoid" in str(err.value)


def test_unknown_task_lists_valid_tasks_of_domain():
    with pytest.raises(c.ConfigError) as err:
        c.resolve_collect(1, env={"AIME_DOMAIN": "reacher"})  # tier 1's task 'swingup' is not a reacher task
    assert err.value.field == "task" and "easy, hard" in str(err.value)


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"num_episodes": 0}, "num_episodes", "positive"),
        ({"max_steps": -5}, "max_steps", "positive"),
        ({"img_size": 8}, "img_size", "between 16 and 256"),
        ({"img_size": 1024}, "img_size", "between 16 and 256"),
        ({"img_size": "big"}, "img_size", "expected int"),
        ({"workers": -1}, "workers", ">= 0"),
        ({"episodes_typo": 3}, "episodes_typo", "allowed:"),
        ({"data_path": "/etc/hostname/x.hdf5"}, "data_path", "not a writable directory"),
    ],
)
def test_collect_validation_messages(overrides, field, words):
    with pytest.raises(c.ConfigError) as err:
        c.resolve_collect(1, overrides=overrides, env={})
    assert err.value.field == field
    assert words in str(err.value)


@pytest.mark.parametrize(
    "overrides, field, words",
    [
        ({"batch_size": 0}, "batch_size", "positive"),
        ({"lr": -1.0}, "lr", "positive"),
        ({"nan_policy": "ignore"}, "nan_policy", "stop, skip"),
        ({"device": "tpu"}, "device", "cuda:N"),
        ({"tier": 4}, "tier", "1, 2, 3"),
        ({"val_fraction": 1.5}, "val_fraction", "between 0 and 1"),
    ],
)
def test_train_validation_messages(overrides, field, words):
    with pytest.raises(c.ConfigError) as err:
        c.resolve_train(1, overrides=overrides, env={})
    assert err.value.field == field and words in str(err.value)


def test_synthetic_replaces_environment_and_rejects_explicit_domain():
    cfg = c.resolve_collect(1, overrides={"synthetic": True}, env={"AIME_DOMAIN": "reacher"})
    assert (cfg.domain, cfg.task) == ("synthetic", "bouncing_ball")
    with pytest.raises(c.ConfigError) as err:
        c.resolve_collect(1, overrides={"synthetic": True, "domain": "cartpole"}, env={})
    assert err.value.field == "synthetic"


def test_every_field_is_documented():
    for cls in (c.CollectConfig, c.TrainConfig):
        undocumented = [k for k, v in c.field_help(cls).items() if len(v) < 10]
        assert undocumented == []


def test_task_table_matches_dm_control():
    suite = pytest.importorskip("dm_control.suite")
    from collections import defaultdict

    table = defaultdict(tuple)
    for domain, task in suite.ALL_TASKS:
        table[domain] += (task,)
    assert dict(table) == c.DMC_TASKS


def test_collect_command_reproduces_expected_dataset():
    train = c.resolve_train(2, overrides={"domain": "finger", "task": "spin"}, env={})
    cmd = c.collect_command(c.collect_config_for(train))
    assert (
        cmd
        == "aime collect --tier 2 --domain finger --task spin --img-size 84 --action-repeat 2 "
        "--out data/finger-spin-tier2-seed0.hdf5"
    )
