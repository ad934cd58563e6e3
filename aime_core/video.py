"""Rollout videos: ground truth | prediction | absolute error side by side, H.264 MP4 through PyAV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OBSERVED = (40, 200, 80)  # border of prediction frames the model saw (reconstructions)
GENERATED = (220, 60, 60)  # border of open-loop frames
PAST_TRAINING = (240, 180, 30)  # border of open-loop frames beyond the training clip length


def panel_frames(gt: torch.Tensor, pred: torch.Tensor, k: int, train_len: int, scale: int = 2) -> np.ndarray:
    """gt/pred [N,T,3,H,W] in [0,1] -> uint8 video [T, N*(H+2)*scale, 3*(W+2)*scale, 3].

    Each row is one clip: ground truth | prediction | |error| (error amplified x2). The prediction's border
    says what it is: green observed, red open loop, amber open loop past the training length.
    """
    err = ((pred - gt).abs() * 2).clamp(0, 1)
    tiles = torch.stack([gt, pred, err], 2)  # [N,T,3panels,3,H,W]
    tiles = (tiles * 255).round().to(torch.uint8).permute(1, 0, 2, 4, 5, 3).cpu().numpy()  # [T,N,P,H,W,3]
    T, N, P, H, W, _ = tiles.shape
    out = np.zeros((T, N, P, H + 2, W + 2, 3), dtype=np.uint8)
    out[:, :, :, 1:-1, 1:-1] = tiles
    for t in range(T):
        color = OBSERVED if t < k else (GENERATED if t < train_len else PAST_TRAINING)
        border = out[t, :, 1]
        border[:, 0, :], border[:, -1, :], border[:, :, 0], border[:, :, -1] = color, color, color, color
    grid = out.transpose(0, 1, 3, 2, 4, 5).reshape(T, N * (H + 2), P * (W + 2), 3)
    return grid.repeat(scale, axis=1).repeat(scale, axis=2)


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 4) -> str:
    """uint8 [T,H,W,3] -> H.264 MP4 (yuv420p; H and W padded to even sizes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    T, H, W, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)))
    import av  # noqa: PLC0415 - only where a video is written: training with video_clips=0 runs without PyAV

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("h264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def read_frame(path: str | Path, index: int = 0) -> np.ndarray:
    """One decoded frame of a video as uint8 [H,W,3] (used by tests and to look at a video)."""
    import av  # noqa: PLC0415

    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame.to_ndarray(format="rgb24")
    raise IndexError(f"{path} has fewer than {index + 1} frames")
