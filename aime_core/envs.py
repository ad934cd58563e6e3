"""Environments the collector steps: DeepMind Control with headless rendering, or the synthetic ball.

Both expose the same small interface: `action_shape`, `action_minimum`, `action_maximum`,
`reset(seed) -> frame`, `step(action) -> (frame, reward, last)`, `state() -> float32 [S]` (the low-dimensional
physics state after the last step, for scoring predictions in state space), `close()`; frames are uint8 [H,W,3].
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from aime_core.h5io import Episode

_PROBE = "import mujoco; c = mujoco.GLContext(8, 8); c.make_current(); c.free()"


class RenderError(RuntimeError):
    """No headless OpenGL backend works; the message says how to fix it."""


def _probe(backend: str) -> str | None:
    """Try to make a MuJoCo GL context with `backend` in a fresh process; None on success, else the error."""
    env = dict(os.environ, MUJOCO_GL=backend, PYOPENGL_PLATFORM=backend)
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "timed out creating a GL context"
    if out.returncode == 0:
        return None
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {out.returncode}"


def default_backend() -> None:
    """Render with MUJOCO_GL=egl unless the user chose a backend (exported, so worker processes inherit it)."""
    os.environ.setdefault("MUJOCO_GL", "egl")


def diagnose_rendering() -> bool:
    """After an environment failed to start: False if rendering works (the failure is something else);
    True after switching MUJOCO_GL from egl to a working osmesa; RenderError saying how to fix it otherwise.

    Probing costs a fresh process (~0.7 s), so it is only done when something already went wrong.
    """
    current = os.environ.get("MUJOCO_GL", "egl")
    errors = {current: _probe(current)}
    if errors[current] is None:
        return False
    if current == "egl":  # the default; osmesa is the fallback
        errors["osmesa"] = _probe("osmesa")
        if errors["osmesa"] is None:
            os.environ["MUJOCO_GL"] = os.environ["PYOPENGL_PLATFORM"] = "osmesa"
            return True
    tried = "; ".join(f"MUJOCO_GL={b}: {e}" for b, e in errors.items())
    raise RenderError(
        f"headless MuJoCo rendering does not work ({tried}). Fix: install EGL "
        "(`apt-get install libegl1 libgl1`, or the NVIDIA driver's EGL on a GPU box) or OSMesa "
        "(`apt-get install libosmesa6`) and set MUJOCO_GL=egl or MUJOCO_GL=osmesa; "
        "or use --synthetic, which needs no rendering."
    )


class DmcEnv:
    """A dm_control suite task rendered from one camera; long episodes allowed (cut by the collector)."""

    def __init__(
        self, domain: str, task: str, img_size: int, camera_id: int, action_repeat: int, fast_render: bool
    ):
        from dm_control import suite
        from dm_control.mujoco.engine import Camera

        # An infinite time limit lets max_steps exceed the task's default episode length.
        self.env = suite.load(domain, task, task_kwargs={"random": 0, "time_limit": float("inf")})
        self.physics = self.env.physics
        spec = self.env.action_spec()
        self.action_shape = tuple(spec.shape)
        self.action_minimum = np.broadcast_to(spec.minimum, spec.shape).astype(np.float32)
        self.action_maximum = np.broadcast_to(spec.maximum, spec.shape).astype(np.float32)
        self.action_repeat = action_repeat
        ncam = self.physics.model.ncam
        if camera_id >= ncam:
            raise ValueError(
                f"camera_id {camera_id} does not exist for {domain}-{task}: it has {ncam} camera(s)"
            )
        # An offscreen buffer the size of the frame: MuJoCo clears and multisamples the whole buffer (640x480
        # by default) every frame. Same pixels, ~20% faster at 64 px; also allows frames larger than 640.
        vis = self.physics.model.vis.global_
        vis.offwidth = vis.offheight = img_size
        self.flags = None
        if fast_render:
            # No multisampling: must be set before the first render creates the offscreen buffer.
            self.physics.model.vis.quality.offsamples = 0
            self.flags = {"shadow": False, "reflection": False}
        # One Camera reused for every frame: physics.render() would allocate a new scene per call
        # (~1.4x slower at 64 px). Same pixels either way.
        self.camera = Camera(self.physics, height=img_size, width=img_size, camera_id=camera_id)

    def state(self) -> np.ndarray:
        """The task's low-dimensional observation of the physics after the last step, flattened to float32 [S]
        (e.g. cartpole: cart position, cos/sin of the pole angle, velocities). Unlike raw qpos, angles come as
        cos/sin, so a linear probe can read them (a pole that spins past 2 pi is one point on the circle)."""
        obs = self.env.task.get_observation(self.physics)
        return np.concatenate([np.ravel(np.asarray(v, dtype=np.float32)) for v in obs.values()])

    def render(self) -> np.ndarray:
        # Copy: the Camera returns a view of its own buffer, which the next render overwrites.
        return self.camera.render(render_flag_overrides=self.flags).copy()  # uint8 [H,W,3]

    def reset(self, seed: int) -> np.ndarray:
        # Re-seed the task's initial-state randomness so episode i does not depend on earlier episodes.
        self.env.task._random = np.random.RandomState(seed)
        self.env.reset()
        return self.render()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        reward, last = 0.0, False
        for _ in range(self.action_repeat):
            ts = self.env.step(action)
            reward += ts.reward or 0.0
            if ts.last():  # a task that terminates by itself (the time limit is infinite)
                last = True
                break
        return self.render(), float(reward), last

    def close(self) -> None:
        self.camera = None  # drops the scene before the physics it points into
        self.env.close()


class SyntheticEnv:
    """The bouncing ball behind the same interface as DmcEnv."""

    def __init__(self, img_size: int, action_repeat: int):
        from aime_core.synthetic import BouncingBall

        self.ball = BouncingBall(img_size)
        self.action_shape = self.ball.action_shape
        self.action_minimum = self.ball.action_minimum
        self.action_maximum = self.ball.action_maximum
        self.action_repeat = action_repeat

    def reset(self, seed: int) -> np.ndarray:
        return self.ball.reset(seed)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool]:
        reward = 0.0
        for _ in range(self.action_repeat):
            frame, r = self.ball.step(action)
            reward += r
        return frame, reward, False

    def state(self) -> np.ndarray:
        """Ball position and velocity (box units) as float32 [4]."""
        return np.concatenate([self.ball.pos, self.ball.vel]).astype(np.float32)

    def close(self) -> None:
        self.ball.close()


def make_env(cfg):
    """The environment a CollectConfig describes."""
    if cfg.synthetic:
        return SyntheticEnv(cfg.img_size, cfg.action_repeat)
    return DmcEnv(cfg.domain, cfg.task, cfg.img_size, cfg.camera_id, cfg.action_repeat, cfg.fast_render)


def run_episode(env, index: int, seed: int, max_steps: int, abandon=None) -> Episode | None:
    """Episode `index` with seed `seed` for both the environment and the uniform random actions.

    `abandon()` is checked between steps; when it turns true the episode is dropped and None returned.
    """
    rng = np.random.RandomState(seed)
    first = env.reset(seed)
    H, W, _ = first.shape
    observations = np.empty((max_steps, H, W, 3), dtype=np.uint8)
    actions = np.empty((max_steps, len(env.action_minimum)), dtype=np.float32)
    rewards = np.empty(max_steps, dtype=np.float32)
    states = np.empty((max_steps, len(env.state())), dtype=np.float32)
    T = max_steps
    for t in range(max_steps):
        if abandon is not None and abandon():
            return None
        action = rng.uniform(env.action_minimum, env.action_maximum).astype(np.float32)
        frame, reward, last = env.step(action)
        # Aligned: observations[t] is the frame after actions[t], rewards[t] that step's reward.
        observations[t], actions[t], rewards[t], states[t] = frame, action, reward, env.state()
        if last:
            T = t + 1
            break
    return Episode(index, seed, first, observations[:T], actions[:T], rewards[:T], states[:T])
