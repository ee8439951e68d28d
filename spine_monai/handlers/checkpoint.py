"""Crash-safe checkpoints for bundle training: atomic files, resume, and no silent loss of an earlier model.

Not tied to a paper. It replaces MONAI's ``CheckpointSaver`` in the bundles' ``train.json`` because, as configured
in the model-zoo bundles (``save_key_metric=True, key_metric_filename="model.pt"``), ignite's saver deletes the old
``model.pt`` before writing the new one (a kill in between leaves no model), and a re-run starts at epoch 0 and
replaces the earlier best model with its first, worse, validation. :class:`CheckpointManager` is attached to both
engines (put the same object in ``train#handlers`` after the ``ValidationHandler`` and in ``validate#handlers``):

- on the evaluator: after each validation, if the key metric improved (greater is better), write ``model.pt`` (a
  plain state dict of the network, loadable with ``weights_only=True``) and its configuration record
  ``model_config.json`` (:mod:`spine_monai.bundle.record`);
- on the trainer: after each epoch, write ``checkpoint.pt`` (network, optimizer, scheduler, epoch, iteration, best
  metric, the list of completed epochs) so that a killed run can continue;
- every file is written to a temporary file in the same folder, flushed, fsync-ed and renamed over the target, so a
  kill at any point leaves the previous complete file or the new complete file, never a truncated one;
- at start, with ``resume=True`` and a ``checkpoint.pt``: the run continues after its last completed epoch (epochs
  are counted once; the best metric so far is kept, so the resumed run does not replace a better ``model.pt``);
- at start without ``resume``: an unfinished ``checkpoint.pt`` stops the run with one line (pass ``--resume true``
  or ``--overwrite true``); an existing ``model.pt`` from an earlier run is copied to ``previous/`` with its record,
  and the log says so, unless ``overwrite=True`` (the original stays in place until the first validation replaces
  it, so a bundle served by MONAI Label always has a model).

Under ``torchrun`` only rank 0 writes; every rank restores the same checkpoint on resume.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from spine_monai.bundle.record import _same, as_bool, read_record, record_path, write_record
from spine_monai.errors import InputError

__all__ = ["CheckpointManager", "atomic_torch_save", "shared_handler"]

logger = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if hasattr(net, "module") and isinstance(net.module, torch.nn.Module) else net


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    return 0


class CheckpointManager:
    """Best-model saving, configuration record and resumable training checkpoints (see the module docstring).

    Args:
        save_dir: the folder of ``model.pt``, ``model_config.json`` and ``checkpoint.pt`` (``@ckpt_dir``).
        network: the trained network (``@network``; a DDP wrapper is unwrapped).
        optimizer: its optimizer, saved in ``checkpoint.pt``.
        lr_scheduler: optional scheduler, saved in ``checkpoint.pt``.
        settings: the resolved ``model_settings`` written into the record.
        overlays: the resolved ``overlays`` list written into the record.
        bundle_root: the bundle folder (its name and version go into the record).
        resume: continue from ``checkpoint.pt`` when it exists.
        overwrite: start over without keeping an earlier ``model.pt`` or an unfinished ``checkpoint.pt``.
        key_metric_filename: the best model's file name.
        checkpoint_filename: the training checkpoint's file name.
        tuned_settings: settings chosen during validation: when the evaluator's ``state.metrics`` holds one of
            these names at a new best metric, its value replaces the setting in the record of the saved model
            (e.g. the attention threshold chosen by :class:`~spine_monai.handlers.AttentionMaskSearch`). They are
            not compared on resume, and a resumed run keeps the values of its best model so far.

    Raises:
        ValueError: at the start of training, for an unfinished checkpoint without ``resume``/``overwrite``, a
            checkpoint that does not load with ``weights_only=True``, or one whose record differs from ``settings``.
    """

    def __init__(self, save_dir: str | os.PathLike, network: torch.nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, lr_scheduler: Any = None,
                 settings: Mapping[str, Any] | None = None, overlays: Sequence[str] = (),
                 bundle_root: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
                 key_metric_filename: str = "model.pt", checkpoint_filename: str = "checkpoint.pt",
                 tuned_settings: Sequence[str] = ()) -> None:
        self.save_dir = Path(save_dir)
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.settings = dict(settings or {})
        self.tuned_settings = [str(k) for k in tuned_settings]
        self.overlays = list(overlays)
        self.bundle_root = bundle_root
        self.resume = as_bool(resume, "resume")
        self.overwrite = as_bool(overwrite, "overwrite")
        self.model_path = self.save_dir / key_metric_filename
        self.checkpoint_path = self.save_dir / checkpoint_filename
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[int] = []
        self._trainer: Any = None
        self._run_id: str | None = None

    # ------------------------------------------------------------------ attaching
    def attach(self, engine: Any) -> None:
        """Attach to a MONAI trainer (epoch checkpoints, resume) or evaluator (best model)."""
        from ignite.engine import Events
        from monai.engines import Evaluator, Trainer

        if isinstance(engine, Trainer):
            self._trainer = engine
            engine.add_event_handler(Events.STARTED, self._started)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        elif isinstance(engine, Evaluator):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._validated)
        else:
            raise ValueError(f"CheckpointManager attaches to a MONAI Trainer or Evaluator, not {type(engine).__name__}")

    # ------------------------------------------------------------------ trainer events
    def _started(self, engine: Any) -> None:
        if self.resume and self.checkpoint_path.is_file():
            self._load_checkpoint(engine)
            return
        if self.resume:
            logger.info("--resume: no %s yet, starting at epoch 1", self.checkpoint_path)
        elif self.checkpoint_path.is_file() and not self.overwrite:
            state = self._read_checkpoint()
            done, total = int(state.get("epoch", 0)), int(engine.state.max_epochs or 0)
            if done < total:
                raise InputError(
                    f"{self.checkpoint_path}: an unfinished earlier run (epoch {done} of {state.get('max_epochs')}) "
                    "is here; pass --resume true to continue it or --overwrite true to start over."
                )
        if _rank() == 0 and self.model_path.is_file() and not self.overwrite:
            self._keep_previous()

    def _keep_previous(self) -> None:
        stamp = datetime.datetime.fromtimestamp(self.model_path.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
        folder = self.save_dir / "previous"
        folder.mkdir(exist_ok=True)
        target = folder / f"{self.model_path.stem}-{stamp}{self.model_path.suffix}"
        n = 1
        while target.exists():
            target = folder / f"{self.model_path.stem}-{stamp}-{n}{self.model_path.suffix}"
            n += 1
        # a copy, so the bundle keeps a usable model.pt (MONAI Label serves it) until the first validation
        shutil.copy2(self.model_path, target)
        rec = record_path(self.model_path)
        if rec.is_file():
            shutil.copy2(rec, record_path(target))
        logger.warning("kept a copy of the earlier %s as %s; this run replaces it at its first validation (pass "
                       "--overwrite true to keep no copy)", self.model_path, target)

    def _read_checkpoint(self) -> dict[str, Any]:
        try:
            state = torch.load(str(self.checkpoint_path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure means the same to the user
            raise InputError(
                f"{self.checkpoint_path}: cannot be read with torch.load(weights_only=True) ({type(err).__name__}); "
                "pass --overwrite true to start over."
            ) from None
        if not isinstance(state, dict) or "network" not in state or "epoch" not in state:
            raise InputError(f"{self.checkpoint_path}: not a spine_monai training checkpoint.")
        return state

    def _load_checkpoint(self, engine: Any) -> None:
        state = self._read_checkpoint()
        recorded = state.get("settings", {})
        for key, value in recorded.items():
            if key in self.tuned_settings:
                self.settings[key] = value
                continue
            if key in self.settings and not _same(value, self.settings[key]):
                raise InputError(
                    f"{self.checkpoint_path}: was trained with {key}={value!r} but this run uses "
                    f"{key}={self.settings[key]!r}; resume with the same settings or pass --overwrite true."
                )
        _unwrap(self.network).load_state_dict(state["network"])
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        engine.state.epoch = int(state["epoch"])
        engine.state.iteration = int(state["iteration"])
        self.history = [int(e) for e in state.get("history", [])]
        self.best_metric = state.get("best_metric")
        self.best_epoch = state.get("best_epoch")
        record = read_record(self.model_path) if self.model_path.is_file() else None
        if record and record.get("metric") and record["metric"].get("run_id") == state.get("run_id"):
            value = record["metric"].get("value")  # model.pt may be newer than the checkpoint (kill in between)
            if value is not None and (self.best_metric is None or value > self.best_metric):
                self.best_metric, self.best_epoch = float(value), record["metric"].get("epoch")
        self._run_id = state.get("run_id")
        logger.info("resumed from %s after epoch %d of %s (best %s at epoch %s)", self.checkpoint_path,
                    engine.state.epoch, engine.state.max_epochs, self.best_metric, self.best_epoch)

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            self._run_id = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
        return str(self._run_id)

    def _epoch_completed(self, engine: Any) -> None:
        epoch = int(engine.state.epoch)
        self.history.append(epoch)
        if _rank() != 0:
            return
        state = {
            "network": _unwrap(self.network).state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else None,
            "epoch": epoch,
            "iteration": int(engine.state.iteration),
            "max_epochs": int(engine.state.max_epochs or 0),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "history": list(self.history),
            "settings": dict(self.settings),
            "run_id": self.run_id,
        }
        atomic_torch_save(state, self.checkpoint_path)

    # ------------------------------------------------------------------ evaluator events
    def _validated(self, engine: Any) -> None:
        name = engine.state.key_metric_name
        if name is None:
            return
        value = engine.state.metrics.get(name)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        if math.isnan(value) or (self.best_metric is not None and value <= self.best_metric):
            return
        epoch = int(self._trainer.state.epoch) if self._trainer is not None else int(engine.state.epoch)
        self.best_metric, self.best_epoch = value, epoch
        for key in self.tuned_settings:
            if key in engine.state.metrics:
                self.settings[key] = engine.state.metrics[key]
        if _rank() != 0:
            return
        atomic_torch_save(_unwrap(self.network).state_dict(), self.model_path)
        write_record(self.model_path, self.settings, self.overlays, self.bundle_root,
                     metric={"name": name, "value": value, "epoch": epoch, "run_id": self.run_id})
        logger.info("saved %s (%s %.4f at epoch %d) and %s", self.model_path, name, value, epoch,
                    record_path(self.model_path).name)


def shared_handler(manager: CheckpointManager) -> CheckpointManager:
    """``manager`` itself, so a handler list can hold it as a ``{"_target_": ...}`` dict.

    MONAI Label 0.8.5 reads ``train#handlers`` as dicts (``t.get("_target_")``) before it inserts its own
    ``CheckpointLoader``, so a bare ``"@checkpoint_manager"`` reference in that list makes its ``/train`` fail; the
    same object must also be in ``validate#handlers`` (it tracks the best metric of the run).
    """
    return manager

