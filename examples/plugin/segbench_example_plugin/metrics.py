"""A metric, registered as ``error_rate``: the share of labelled pixels predicted wrong, summed exactly over
batches and over the processes of a torchrun job."""

import torch

import segbench
from segbench.metrics.protocol import Accumulator, Batch, Scores, Setup, Split


@segbench.register_metric("error_rate", higher_is_better=False,
                          definition="labelled pixels predicted as another class / labelled pixels")
class ErrorRate(Accumulator):
    summed = ("counts",)  # [wrong, labelled], all-reduced across processes

    @classmethod
    def build(cls, setup: Setup) -> "ErrorRate":
        accumulator = cls()
        accumulator.num_classes = setup.info.num_classes
        accumulator.counts = torch.zeros(2, dtype=torch.float64, device=setup.device)
        return accumulator

    def update(self, batch: Batch) -> None:
        labelled = batch.target < self.num_classes
        wrong = labelled & (batch.pred != batch.target)
        self.counts += torch.stack([wrong.sum(), labelled.sum()]).double()

    def compute(self, split: Split) -> Scores:
        wrong, labelled = self.counts.tolist()
        return Scores({"error_rate": wrong / labelled if labelled else float("nan")})
