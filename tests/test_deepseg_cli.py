"""`lesionseg deepseg`'s command line: the task first (SCT 7's `sct_deepseg TASK -i ...`) or with
`-task` (SCT 6); the serving itself is tested in test_batch_e2e and the golden outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lesionseg.client.cli import main
from lesionseg.client.cli.deepseg import chosen_task
from lesionseg.core.errors import UsageError


@pytest.mark.parametrize(("positional", "option"), [("seg_ms_lesion", None), (None, "seg_ms_lesion"),
                                                    ("seg_ms_lesion", "seg_ms_lesion")])
def test_either_form_names_the_task(positional: str | None, option: str | None) -> None:
    assert chosen_task(positional, option) == "seg_ms_lesion"


def test_two_different_tasks_or_none_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "t2.nii.gz"  # never read: the command line is refused first
    assert main(["deepseg", "seg_ms_lesion", "-task", "seg_sc_contrast_agnostic", "-i", str(image), "-url", "127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.strip() == "lesionseg: error: two tasks given: seg_ms_lesion and -task seg_sc_contrast_agnostic"
    assert main(["deepseg", "-i", str(image), "-url", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lesionseg: error: no task: lesionseg deepseg TASK -i IMAGE (tasks: lesion_ms, lesion_ms_mp2rage, lesion_ms_axial_t2, spinalcord)") and "\n" not in err
    with pytest.raises(UsageError):
        chosen_task(None, None)


def test_qc_plane_is_axial_or_sagittal_in_any_case() -> None:
    from lesionseg.client.writer import Writer
    from lesionseg.core.enums import Plane

    assert Writer(qc_plane="Sagittal").qc_plane is Plane.SAGITTAL
    assert Writer().qc_plane is Plane.AXIAL
    with pytest.raises(UsageError, match="-qc-plane 'coronal'"):
        Writer(qc_plane="coronal")
    with pytest.raises(UsageError, match="-qc-subject name a QC entry: give -qc DIR too"):
        Writer(qc_subject="sub-01")
    assert Writer(qc=Path("qc"), qc_dataset="d", qc_subject="s").qc_subject == "s"


@pytest.mark.parametrize("command", [["deepseg", "seg_ms_lesion"], ["deepseg-lesion", "-c", "t2s"]])
def test_qc_subject_names_one_subject(command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]  # never read: refused first
    assert main([*command, "-i", *map(str, images), "-qc", str(tmp_path / "qc"), "-qc-subject", "sub-01",
                 "-url", "127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.strip() == ("lesionseg: error: -qc-subject names one subject; with several inputs "
                                               "each entry takes its subject from its path")
    assert not (tmp_path / "qc").exists()


class Served:
    """A stand-in for a ServerPool that answers only `serves` (which models are ready)."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def serves(self, name: str) -> bool:
        return name in self.names


def test_sct6_names_mean_sct7_tasks_unless_served_themselves() -> None:
    from lesionseg.client.task import served_task

    assert served_task(Served("lesion_ms"), "seg_ms_lesion") == (
        "lesion_ms", "seg_ms_lesion is SCT 6's name of lesion_ms (SCT 7): using lesion_ms")
    assert served_task(Served("lesion_ms", "seg_ms_lesion"), "seg_ms_lesion") == ("seg_ms_lesion", None)
    assert served_task(Served(), "seg_sc_contrast_agnostic") == ("seg_sc_contrast_agnostic", None)  # then: not served
    assert served_task(Served("spinalcord"), "spinalcord") == ("spinalcord", None)
    assert served_task(Served("my_task"), "my_task") == ("my_task", None)


@pytest.mark.realdata
@pytest.mark.parametrize(("command", "options"), [(["deepseg", "lesion_ms"], []), (["deepseg-lesion"], ["-c", "t2s"])],
                         ids=["deepseg", "deepseg-lesion"])
@pytest.mark.parametrize("where", ["ofolder", "output"])
def test_an_unwritable_output_is_refused_before_any_work(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch, command: list[str], options: list[str],
                                                         where: str) -> None:
    """Issue 23, finding 4: an output folder that cannot be written (here: under a regular file) is
    a usage error named in one line before anything runs, not a traceback after inference. The
    server given is down: the folder is checked before the server is asked."""
    from pacs_peers import free_port

    monkeypatch.setenv("LESIONSEG_REPOSITORY", str(tmp_path / "no_repository"))  # no embedded server to fall back on
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    image = shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"
    target = ["-ofolder", str(blocker / "out")] if where == "ofolder" else ["-o", str(blocker / "out" / "seg.nii.gz")]
    code = main([*command, "-i", str(image), *options, *target, "-url", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and f"{blocker} is a file, not a folder" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.realdata
@pytest.mark.parametrize(("command", "options", "server"), [(["deepseg", "lesion_ms"], [], True), (["crop"], [], False)],
                         ids=["deepseg", "crop"])  # deepseg-lesion's -o is its output folder: refused as a file
def test_overwrite_never_replaces_an_input(shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, command: list[str], options: list[str],
                                           server: bool) -> None:
    """Issue 23, finding 6: --overwrite replaces earlier outputs, never what the user gave: -o naming
    the input (or, for crop, its mask) is a usage error before anything runs, the file untouched."""
    import shutil

    from pacs_peers import free_port

    monkeypatch.setenv("LESIONSEG_REPOSITORY", str(tmp_path / "no_repository"))
    image = tmp_path / "t2s.nii.gz"
    shutil.copy(shared / "sct_testing_data" / "t2s" / "t2s.nii.gz", image)
    mask = tmp_path / "t2s_seg.nii.gz"
    shutil.copy(shared / "sct_testing_data" / "t2s" / "t2s_seg.nii.gz", mask)
    before = image.read_bytes(), mask.read_bytes()
    extra = ["-url", f"127.0.0.1:{free_port()}"] if server else ["-m", str(mask)]
    for victim in ((image,) if server else (image, mask)):
        assert main([*command, "-i", str(image), *options, *extra, "-o", str(victim), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{victim}" in err and "is an input" in err and len(err.splitlines()) == 1, err
    assert (image.read_bytes(), mask.read_bytes()) == before


def test_a_batch_output_may_not_be_another_subjects_input(tmp_path: Path) -> None:
    """Issue 23, finding 6: in a batch, --overwrite may not let one subject's output replace another
    subject's input."""
    from lesionseg.client.batch.inputs import Subject
    from lesionseg.client.batch.runner import BatchOptions, Planned, check_outputs
    from lesionseg.client.result import Outputs

    a, b = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    planned = [Planned(subject=Subject(path=a), outputs=Outputs(masks={"lesion": b}, folder=tmp_path)),
               Planned(subject=Subject(path=b), outputs=Outputs(masks={"lesion": tmp_path / "b_seg.nii.gz"}, folder=tmp_path))]
    with pytest.raises(UsageError, match=f"{a} would write {b}, which is an input"):
        check_outputs(planned, BatchOptions(overwrite=True))
