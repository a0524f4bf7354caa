"""The state of a training loop: where it is, what it has seen, what it has measured."""
import dataclasses

__all__ = ["TrainState"]


@dataclasses.dataclass
class TrainState:
    """Everything a run needs, besides parameters and optimizer, to continue exactly.

    Attributes
    ----------
    epoch : int
        The epoch being trained (from 0); after it ends, the next one.
    batch : int
        Batches of ``epoch`` already done (0 at an epoch boundary).
    best_top1 : float
        Best validation top-1 so far (-1 before the first evaluation).
    history : list of dict
        One row per finished epoch, as written to ``metrics.jsonl``.
    seen, loss_sum, skipped : int, float, int
        Partial sums of the current epoch: images trained on, summed loss,
        batches skipped for a non-finite loss.
    """
    epoch: int = 0
    batch: int = 0
    best_top1: float = -1.0
    history: list = dataclasses.field(default_factory=list)
    seen: int = 0
    loss_sum: float = 0.0
    skipped: int = 0

    def start_epoch(self, epoch):
        """Begin ``epoch``; the partial sums restart unless it resumes in the middle."""
        if epoch != self.epoch or self.batch == 0:
            self.seen, self.loss_sum, self.skipped = 0, 0.0, 0
            self.batch = 0
        self.epoch = epoch

    def end_epoch(self, row):
        """Record the epoch's ``row``; returns whether ``row['val_top1']`` is a new best."""
        self.history.append(row)
        improved = row["val_top1"] > self.best_top1
        self.best_top1 = max(self.best_top1, row["val_top1"])
        self.epoch, self.batch = self.epoch + 1, 0
        self.seen, self.loss_sum, self.skipped = 0, 0.0, 0
        return improved

    def state_dict(self):
        """A plain dict, as stored in a checkpoint's ``.states`` (resattn 0.1's layout)."""
        partial = None
        if self.batch:
            partial = {"seen": self.seen, "loss_sum": self.loss_sum, "skipped": self.skipped}
        return {"epoch": self.epoch, "batch": self.batch, "best_top1": self.best_top1,
                "history": list(self.history), "partial": partial}

    def load_state_dict(self, state):
        """Restore from :meth:`state_dict` (or a resattn 0.1 checkpoint's ``meta``)."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        self.best_top1 = float(state["best_top1"])
        self.history = list(state["history"])
        partial = state.get("partial") or {}
        self.seen = partial.get("seen", 0)
        self.loss_sum = partial.get("loss_sum", 0.0)
        self.skipped = partial.get("skipped", 0)
