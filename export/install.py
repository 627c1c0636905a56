"""`lesionseg models install`: fetch SCT's released models, verify them, export them into a repository.

Sources: SCT's release URLs (default), any http(s) URL of a zip, a local zip, a local folder, or
an SCT installation (`$SCT_DIR`, models under `data/deepseg_lesion_models` and
`data/deepseg_sc_models`). Downloads go to `~/.cache/lesionseg/downloads` (XDG_CACHE_HOME),
are written atomically, checked as zip archives holding the expected members and, where a
checksum is pinned or was recorded by an earlier download, checked against it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from lesionseg.core.errors import InputError, LesionsegError, ModelNotFoundError, UsageError
from lesionseg.core.files import sha256
from lesionseg.core.paths import cache_dir, user_path

if TYPE_CHECKING:
    from lesionseg.export.networks import Serving
    from lesionseg.export.precision import ParityOptions

logger = logging.getLogger(__name__)

#: Where SCT publishes its releases; LESIONSEG_RELEASES_URL replaces it (mirrors, tests).
GITHUB = "https://github.com"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Release:
    """One released zip: its path under the releases host and the files it must contain."""

    path: str
    members: tuple[str, ...]
    sha256: str | None = None  # pinned checksum when known

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def url(self, base: str | None = None) -> str:
        return (base or os.environ.get("LESIONSEG_RELEASES_URL") or GITHUB).rstrip("/") + "/" + self.path


SCT_LEGACY_RELEASES = (
    Release(
        path="spinalcordtoolbox/deepseg_lesion_models/releases/download/r20180613/20220325_deepseg_lesion_models_onnx.zip",
        members=("t2_lesion.onnx", "t2_ax_lesion.onnx", "t2s_lesion.onnx"),
    ),
    Release(
        path="spinalcordtoolbox/deepseg_sc_models/releases/download/r20180610/20220325_deepseg_sc_models_onnx.zip",
        members=("t2_ctr.onnx", "t2s_ctr.onnx"),
    ),
)


def task_release(url: str, members: tuple[str, ...] = ("plans.json", "dataset.json")) -> Release:
    """The release of a task zip at `url` (SCT's GitHub release URLs); nnU-Net zips by default."""
    path = url.removeprefix(GITHUB + "/") if url.startswith(GITHUB + "/") else url
    return Release(path=path, members=members)


class DownloadError(LesionsegError):
    """A model archive could not be fetched or failed verification."""


def download(url: str, target: Path, *, progress: Callable[[int, int | None], None] | None = None, timeout: float = 60) -> Path:
    """Fetch `url` into `target` atomically (a `.part` file renamed when complete)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:  # noqa: S310 - http(s) only
            total = response.headers.get("Content-Length")
            total_bytes = int(total) if total and total.isdigit() else None
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total_bytes)
        if total_bytes is not None and done != total_bytes:
            raise DownloadError(f"{url}: download incomplete ({done} of {total_bytes} bytes)")
        part.replace(target)
    except urllib.error.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: cannot download ({reason})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return target


def verify_zip(path: Path, members: tuple[str, ...], *, expected_sha256: str | None = None, record: bool = True) -> str:
    """Check an archive: pinned or recorded checksum, zip integrity, expected members.

    With `record`, the checksum of the first verified download is recorded next to it
    (`<zip>.sha256`) and a later copy must match it. Returns the archive's sha256.
    """
    digest = sha256(path)
    recorded = path.with_name(path.name + ".sha256")
    expected = expected_sha256 or (recorded.read_text().strip() if recorded.exists() else None)
    if expected and digest != expected:
        raise DownloadError(f"{path}: checksum mismatch (sha256 {digest[:12]}..., expected {expected[:12]}...)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = {Path(n).name for n in archive.namelist()}
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{path}: not a valid zip archive ({exc})") from None
    if bad is not None:
        raise DownloadError(f"{path}: corrupt member {bad}")
    missing = [m for m in members if m not in names]
    if missing:
        raise DownloadError(f"{path}: archive lacks {', '.join(missing)}")
    if record and not recorded.exists():
        recorded.write_text(digest + "\n")
    return digest


def extract(path: Path, target: Path) -> Path:
    """Unpack a zip into `target` (replacing an earlier extraction), refusing paths that escape it."""
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent if target.parent.exists() else None))
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                resolved = (staging / member).resolve()
                if not str(resolved).startswith(str(staging.resolve())):
                    raise DownloadError(f"{path}: member {member!r} escapes the extraction folder")
            archive.extractall(staging)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_release(release: Release, *, base_url: str | None = None, refresh: bool = False,
                  progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download (or reuse the cached copy of) a release zip, verify it, extract it; returns the folder."""
    archive = cache_dir() / "downloads" / release.filename
    if refresh or not archive.exists():
        url = release.path if "://" in release.path else release.url(base_url)
        logger.info("downloading %s", url)
        download(url, archive, progress=progress)
    try:
        verify_zip(archive, release.members, expected_sha256=release.sha256)
    except DownloadError:
        archive.unlink(missing_ok=True)  # never keep a bad archive in the cache
        raise
    return extract(archive, cache_dir() / "models" / archive.name.removesuffix(".zip"))


def sct_dir(value: str) -> Path:
    """The SCT installation named by `value` ("sct" means $SCT_DIR)."""
    if value == "sct":
        env = os.environ.get("SCT_DIR")
        if not env:
            raise InputError("--from sct needs $SCT_DIR to point at an SCT installation")
        value = env
    path = Path(value)
    if not (path / "data").is_dir():
        raise ModelNotFoundError(f"{path}: not an SCT installation (no data/ folder)")
    return user_path(path / "data")


def resolve_source(source: str | None, *, base_url: str | None = None,
                   progress: Callable[[int, int | None], None] | None = None) -> Path:
    """A local folder holding the legacy models, from any supported source.

    Args:
        source: None (SCT's release URLs), an http(s) URL of a zip, a zip file, a folder, or "sct"
            / an SCT install folder (recognised by its data/deepseg_* folders).
    """
    if source is None:
        folders = [fetch_release(r, base_url=base_url, progress=progress) for r in SCT_LEGACY_RELEASES]
        return _merge(folders)
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https"):
        name = Path(parsed.path).name or "models.zip"
        archive = cache_dir() / "downloads" / name
        download(source, archive, progress=progress)
        try:
            verify_zip(archive, ())
        except DownloadError:
            archive.unlink(missing_ok=True)
            raise
        return extract(archive, cache_dir() / "models" / name.removesuffix(".zip"))
    if source == "sct" or (Path(source) / "data" / "deepseg_lesion_models").is_dir():
        return sct_dir(source)
    path = Path(source)
    if not path.exists():
        raise InputError(f"{path}: model source does not exist")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise InputError(f"{path}: not a zip archive")
        verify_zip(path, (), record=False)
        return extract(path, cache_dir() / "models" / path.name.removesuffix(".zip"))
    return user_path(path)


def _recorded(source: str) -> str:
    """`--from` as recorded with the installed models: a local path made absolute."""
    return source if source == "sct" or "://" in source else str(user_path(source))


def _merge(folders: list[Path]) -> Path:
    """One folder linking the files of several extracted releases (their names do not clash)."""
    merged = cache_dir() / "models" / "sct-legacy"
    if merged.exists():
        shutil.rmtree(merged)
    merged.mkdir(parents=True)
    for folder in folders:
        for file in folder.rglob("*.onnx"):
            link = merged / file.name
            if not link.exists():
                link.symlink_to(file)
    return merged


@dataclasses.dataclass(frozen=True, kw_only=True)
class Installed:
    """What `install_legacy` / `install_task` wrote: the served `models`, a short description of
    what they hold, where they came from, and the legacy contrasts skipped for lack of models."""

    models: tuple[str, ...]
    description: str
    source: str
    skipped: tuple[str, ...] = ()


def install_legacy(source: str | None, repository: Path, *, contrast: str = "all", serving: Serving | None = None,
                   progress: Callable[[int, int | None], None] | None = None, parity: ParityOptions | None = None) -> Installed:
    """`lesionseg models install sct-legacy`: SCT's legacy networks from `source` (see
    `resolve_source`; None: SCT's release URLs) exported as the `deepseg_lesion_<contrast>` pipelines."""
    from lesionseg.core.catalogue import legacy_model
    from lesionseg.export.legacy import export_sct_legacy

    folder = resolve_source(source, progress=progress)
    result = export_sct_legacy(folder, repository, contrast=contrast, serving=serving, parity=parity)
    models = tuple(legacy_model(c) for c in result.contrasts)
    return Installed(models=models, description=", ".join(models), source=str(folder), skipped=result.skipped)


CROP_METADATA = "crop_metadata.json"


def crop_padding(folder: Path, *, required: bool) -> dict[str, float] | None:
    """The sc-crop padding of a model folder (`crop_metadata.json` at its root, as SCT master's
    `load_crop_metadata` reads it: the six pad_* values in mm), None when the file is absent and
    not `required`.

    Raises:
        ModelNotFoundError: `required` (a release trained on sc-crop's boxes) and the file is missing;
        InputError: the file is not JSON, or a pad_* value is missing or not a number of mm >= 0.
    """
    import json

    from lesionseg.server.pipelines.sccrop import PAD_KEYS, Padding

    path = folder / CROP_METADATA
    if not path.is_file():
        if required:
            raise ModelNotFoundError(f"{folder}: this model runs on sc-crop's cord box but has no {CROP_METADATA} "
                                     "(the release is likely missing it: reinstall, or check the release's files)")
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise InputError(f"{path}: not readable JSON ({exc})") from None
    try:
        Padding.from_metadata(raw if isinstance(raw, dict) else {}, source=str(path))
    except ValueError as exc:  # names the file and the key
        raise InputError(str(exc)) from None
    return {key: float(raw[key]) for key in PAD_KEYS}


def merge_model_folders(folders: Sequence[Path], target: Path) -> Path:
    """One nnU-Net model folder from the zips of its folds (SCT unpacks every fold zip into the
    same model folder): the files of each linked into `target`; a file present in several (plans,
    dataset, crop metadata) must be identical in all.

    Raises:
        DownloadError: the zips disagree on a shared file.
    """
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for folder in folders:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            link = target / file.relative_to(folder)
            if link.exists():
                if sha256(link) != sha256(file):
                    raise DownloadError(f"{file}: differs from the same file of another fold's zip ({link.name})")
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(file.resolve())
    return target


def sct_model_folder(source: str, task_name: str) -> Path | None:
    """The task's model folder in an SCT 7 installation named by `source` ("sct": $SCT_DIR), or
    None when `source` is not an SCT installation with SCT 7's model folders."""
    from lesionseg.core.catalogue import TASKS

    if source != "sct" and not (Path(source) / "data" / "deepseg_models").is_dir():
        return None
    folder = sct_dir(source) / "deepseg_models" / TASKS[task_name].sct_model
    if not folder.is_dir():
        raise ModelNotFoundError(f"{folder}: not installed in this SCT (sct_deepseg {task_name} -install)")
    return folder


def install_task(name: str, repository: Path, *, release: str | None = None, source: str | None = None,
                 folds: Sequence[str] | None = None, serving: Serving | None = None,
                 progress: Callable[[int, int | None], None] | None = None, parity: ParityOptions | None = None) -> Installed:
    """`lesionseg models install <task>`: a sct_deepseg task's release (or `source`), verified and
    exported in its format under SCT 7's task name: an nnU-Net model folder (a release of several
    fold zips is unpacked into one, as SCT does), SCT 6.5's MONAI checkpoint or SCT 6.0-6.3's
    ivadomed ensemble (recognised by the files it holds). A model trained on sc-crop's boxes
    carries its padding (crop_metadata.json) into the task's `crop` parameter; a release known to
    be cropped that lacks it is refused, as SCT refuses it. `source` may be an SCT 7 installation
    ("sct" or its folder): its installed model folder of the task.

    Raises:
        UsageError: unknown task or release; DownloadError, InputError, ExportError.
    """
    from lesionseg.core.catalogue import TASKS, canonical

    name = canonical(name)[0]
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r} (choose from {', '.join(TASKS)})")
    task = TASKS[name]
    chosen = task.release(release)
    cropped_release = chosen.cropped
    if source is None:
        members = ("plans.json", "dataset.json") if chosen is task.default else ()
        folders = [fetch_release(task_release(u, members), progress=progress) for u in chosen.urls]
        if len(folders) > 1 and all(any(f.rglob("plans.json")) for f in folders):
            folders = [merge_model_folders(folders, cache_dir() / "models" / f"{name}-{chosen.name}")]
        source = " ".join(chosen.urls)
    else:
        sct_folder = sct_model_folder(source, name)
        folders = [sct_folder] if sct_folder is not None else [resolve_source(source, progress=progress)]
        # SCT: a model from a custom URL without crop metadata runs on the whole image
        cropped_release = False
        source = _recorded(source)
    folder = folders[0]
    nnunet = any(folder.rglob("plans.json"))
    if not nnunet and any(next(f.rglob("*.onnx"), None) for f in folders):  # SCT 6.0-6.3's ivadomed models
        from lesionseg.export.ivadomed import export_ivadomed

        ivadomed = export_ivadomed(folders, repository, task=task.name, serving=serving, source=source)
        return Installed(models=(ivadomed.task,), description=f"{ivadomed.task} ({len(ivadomed.members)} ivadomed members)",
                         source=source)
    if not nnunet and any(folder.rglob("*.ckpt")):  # SCT 6.5's MONAI model
        from lesionseg.export.monai import export_monai

        monai = export_monai(folder, repository, task=task.name, serving=serving, source=source)
        return Installed(models=(monai.task,), description=f"{monai.task} ({monai.plan.network}, MONAI checkpoint)", source=source)
    from lesionseg.export.nnunet import export_nnunet

    crop = crop_padding(folder, required=cropped_release)
    result = export_nnunet(folder, repository, task=task.name, folds=folds, serving=serving, source=source, parity=parity,
                           fold_combination=chosen.fold_combination, crop=crop)
    cropped = ", on sc-crop's cord box" if crop else ""
    return Installed(models=(result.task,), description=f"{result.task} ({', '.join(result.plan.networks)}{cropped})", source=source)
