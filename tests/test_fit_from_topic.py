"""Learning normal from a live camera topic: the collector on the local bus, and `vad-inspection
fit --from-topic` over DDS against a camera publishing in this process."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import scenes3d as s3

from vad_inspection.cli import main
from vad_inspection.errors import SetupError
from vad_inspection.msgs.image import Frame, frame_to_msg
from vad_inspection.nodes.collect import collect_frames
from vad_inspection.transport import SENSOR_DATA, create_bus
from vad_inspection.transport.local import LocalGraph
from vad_inspection.vad.detector import load_detector

NS = 1_000_000_000


def test_collector_takes_one_camera_and_counts_what_it_refuses() -> None:
    graph = LocalGraph()
    with (
        create_bus("local", "fit", graph=graph) as bus,
        create_bus("local", "cam", graph=graph) as cam,
    ):
        pub = cam.create_publisher("/cam/image", "sensor_msgs/msg/Image", SENSOR_DATA)
        views = s3.clean_views(4)
        stop = threading.Event()

        def camera() -> None:
            i = 0
            while not stop.is_set():
                image = views[0][:64] if i % 3 == 2 else views[i % 4]  # every third: another size
                msg = frame_to_msg(Frame(np.ascontiguousarray(image), "rgb8", i * NS, "cam"))
                if i % 5 == 1:  # (repeated: a loaded machine's QoS depth may drop one)
                    msg.encoding = "yuv_weird"
                pub.publish(msg)
                i += 1
                stop.wait(0.01)

        thread = threading.Thread(target=camera, daemon=True)
        thread.start()
        try:
            got = collect_frames(bus, "/cam/image", 6, timeout_s=20)
        finally:
            stop.set()
            thread.join(5)
    # one camera, one size: whichever size came first (a loaded machine may drop the very first)
    assert len(got.frames) == 6 and len({f.shape for f in got.frames}) == 1
    assert got.encoding == "rgb8"
    causes = " ".join(got.refused)
    assert "undecodable" in causes and "differs from the first frame" in causes


def test_collector_names_the_topic_when_nothing_comes() -> None:
    pattern = r"/nobody/image .*0 of 5 frames.*camera publishing"
    with (
        create_bus("local", "fit", graph=LocalGraph()) as bus,
        pytest.raises(SetupError, match=pattern),
    ):
        collect_frames(bus, "/nobody/image", 5, timeout_s=0.3)


@pytest.mark.slow
def test_fit_from_a_topic_over_dds(
    domain: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("VAD_INSPECTION_CACHE", str(tmp_path / "cache"))
    views = s3.clean_views(40)
    stop = threading.Event()

    def camera() -> None:
        with create_bus("dds", "camera") as cam:
            pub = cam.create_publisher("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_DATA)
            i = 0
            while not stop.is_set():
                image = views[i % len(views)]
                pub.publish(frame_to_msg(Frame(image, "rgb8", i * NS, "camera_optical")))
                i += 1
                stop.wait(1 / 60)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    out = tmp_path / "live.vad"
    try:
        args = ["--frames", "30", "--size", "64", "--timeout", "60", "-o", str(out)]
        code = main(["fit", "--method", "patchcore", "--from-topic", "/camera/image_raw", *args])
    finally:
        stop.set()
        thread.join(10)
    captured = capsys.readouterr()
    text = captured.out
    assert code == 0, captured.err
    assert "took 30 frames (rgb8 128x128x3)" in text
    detector = load_detector(out)
    assert detector.post.calibrated
    clean = detector(s3.render(2.0, 0.0, ())[0], "rgb8")
    broken = detector(s3.render(0.3, 0.1)[0], "rgb8")
    assert broken.score > clean.score


def test_fit_from_a_silent_topic_fails_clearly(
    domain: int, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code = main(["fit", "--method", "patchcore", "--from-topic", "/silent/image", "--frames", "3",
                 "--timeout", "0.5", "-o", str(tmp_path / "x.vad")])  # fmt: skip
    assert code == 2
    assert "/silent/image [sensor_msgs/msg/Image]: 0 of 3 frames" in capsys.readouterr().err
    assert not (tmp_path / "x.vad").exists()
