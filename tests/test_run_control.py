"""tools.run_control's progress line on a resumed run: its speed counts only the epochs run since the resume."""

from __future__ import annotations

import logging

from ignite.engine import Engine, Events

from tools.run_control import ProgressLog


def test_progress_counts_epochs_from_the_resumed_epoch_not_from_zero(caplog):
    engine = Engine(lambda e, b: None)
    log = ProgressLog("fold 1/3").attach(engine)

    @engine.on(Events.STARTED)  # after the progress log's own STARTED handler, as a resume checkpoint loader is
    def _resume(e):
        e.state.epoch = 20

    with caplog.at_level(logging.INFO, logger="tools.run_control"):
        engine.run([0, 1], max_epochs=22)
    assert log._start_epoch == 20  # 2 epochs run here; counting from 0 would divide the time by 22
    lines = [r.getMessage() for r in caplog.records if "s/epoch" in r.getMessage()]
    assert [line.split(",")[0] for line in lines] == ["[fold 1/3] epoch 21/22", "[fold 1/3] epoch 22/22"]
