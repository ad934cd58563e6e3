"""A procedural environment for tests and the "test on synthetic data" workflow: no MuJoCo, numpy only.

A ball in a walled box is pushed by the 2-D action (an acceleration), slowed by friction, and bounces off the
walls. The reward is how close it is to a fixed target drawn in the frame, so frames, actions and rewards all
carry information a world model can learn from.
"""

from __future__ import annotations

import numpy as np

BALL_RADIUS = 0.09  # in box units ([0, 1] on each axis)
TARGET = np.array([0.7, 0.3])
PUSH = 0.02  # velocity change per step at full action
FRICTION = 0.96  # velocity kept per step
MAX_SPEED = 0.12

BACKGROUND = np.array([30, 32, 40], dtype=np.float32)
WALL = np.array([200, 200, 210], dtype=np.float32)
TARGET_COLOR = np.array([60, 200, 90], dtype=np.float32)
BALL_COLOR = np.array([230, 70, 50], dtype=np.float32)


class BouncingBall:
    """Same interface as envs.DmcEnv: action spec, reset(seed) -> frame, step(action) -> (frame, reward)."""

    action_shape = (2,)
    action_minimum = np.full(2, -1.0, dtype=np.float32)
    action_maximum = np.full(2, 1.0, dtype=np.float32)

    def __init__(self, img_size: int):
        self.img_size = img_size
        # Pixel centres in box units; the outer 1/16 of the frame is the wall.
        wall = max(1, img_size // 16)
        inner = img_size - 2 * wall
        coords = (np.arange(img_size) - wall + 0.5) / inner
        self._y, self._x = np.meshgrid(coords, coords, indexing="ij")  # [H,W] each
        self._px = 1.0 / inner  # one pixel in box units, for anti-aliased edges
        self._base = np.empty((img_size, img_size, 3), dtype=np.float32)
        self._base[:] = WALL
        self._base[wall:-wall, wall:-wall] = BACKGROUND
        target = (np.abs(self._x - TARGET[0]) < 0.06) & (np.abs(self._y - TARGET[1]) < 0.06)
        self._base[target] = TARGET_COLOR
        self.pos = np.zeros(2)
        self.vel = np.zeros(2)

    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.RandomState(seed)
        self.pos = rng.uniform(0.2, 0.8, size=2)
        self.vel = rng.uniform(-0.04, 0.04, size=2)
        return self.render()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float]:
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.vel = np.clip(FRICTION * self.vel + PUSH * action, -MAX_SPEED, MAX_SPEED)
        self.pos = self.pos + self.vel
        for axis in range(2):  # reflect off the walls, keeping the ball inside
            lo, hi = BALL_RADIUS, 1.0 - BALL_RADIUS
            if self.pos[axis] < lo:
                self.pos[axis] = 2 * lo - self.pos[axis]
                self.vel[axis] = -self.vel[axis]
            elif self.pos[axis] > hi:
                self.pos[axis] = 2 * hi - self.pos[axis]
                self.vel[axis] = -self.vel[axis]
        reward = float(np.exp(-8.0 * np.sum((self.pos - TARGET) ** 2)))  # 1 on the target, ~0 far away
        return self.render(), reward

    def render(self) -> np.ndarray:
        dist = np.sqrt((self._x - self.pos[0]) ** 2 + (self._y - self.pos[1]) ** 2)  # [H,W]
        cover = np.clip((BALL_RADIUS - dist) / self._px + 0.5, 0.0, 1.0)[..., None]  # anti-aliased disc
        frame = self._base * (1.0 - cover) + BALL_COLOR * cover
        return np.round(frame).astype(np.uint8)  # [H,W,3]

    def close(self) -> None:
        pass
