"""The gateway's configuration: one TOML (or YAML) file, documented defaults, and for the scalar
`[gateway]` keys the precedence argument > `LESIONSEG_GATEWAY_<KEY>` env > file > default.

    [gateway]
    ae_title = "LESIONSEG"        # our AE title (called AE title the modalities use)
    host = "0.0.0.0"              # address the DICOM listener binds
    port = 11112                  # DICOM port
    spool = "spool"               # received instances, results and the job journal (relative: to the file)
    stable_age = 10.0             # seconds a series must be quiet before it counts as complete
    min_free_mb = 1024            # refuse associations (and C-STOREs) under this much free disk
    url = "127.0.0.1:8001"        # Triton gRPC address; several, comma-separated, or a name with several addresses
    embedded_server = false       # start the embedded Triton (with `repository`) for the gateway's life
    repository = ""               # model repository of the embedded server (default: the model cache)
    metrics_port = 0              # Prometheus /metrics on this port (0: off)
    qc_capture = false            # also send a Secondary Capture of the QC mosaic (viewers without SEG support)
    workers = 3                   # series segmented at once (more than the server's instances: it stays busy)
    retry_first = 5.0             # seconds before the first retry of a failed delivery or segmentation
    retry_max = 300.0             # longest wait between retries (doubling from retry_first)
    max_series_instances = 4096   # a series' instances beyond this are refused and the series is failed
    max_instance_pixels = 67108864  # an instance of more pixels (Rows x Columns x frames) is refused

    [callers]                     # calling AE titles allowed to send, each with its allowed hosts ([] = any)
    ORTHANC = ["127.0.0.1"]

    [[routes]]                    # first match wins; a series no route matches is ignored
    name = "t2star axial"
    modality = "MR"               # every condition given must hold
    series_description = "(?i)t2\\*|t2star"   # regular expressions, searched (re.search)
    protocol_name = ""
    image_type = ["ORIGINAL"]     # values that must all be in ImageType
    orientation = "axial"         # axial | sagittal | coronal (from the slice normal)
    contrast = "t2s"              # deepseg-lesion -c t2s ...
    # task = "seg_ms_lesion"      # ... or deepseg -task (crop_to_cord = true for the MP2RAGE chain)
    # cord_task = "seg_sc_contrast_agnostic"  # add a spinal cord segment from this task
    # action = "ignore"

    [[destinations]]              # every result goes to each of them
    name = "pacs"
    kind = "cstore"               # cstore: ae_title, host, port | stowrs: url
    ae_title = "ORTHANC"
    host = "127.0.0.1"
    port = 4242
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from lesionseg.core.catalogue import LEGACY_CONTRASTS
from lesionseg.core.enums import Plane, StrEnum, choices
from lesionseg.core.errors import UsageError
from lesionseg.core.settings import ENV_PREFIX

PLANES = tuple(Plane)


class Action(StrEnum):
    SEGMENT, IGNORE = "segment", "ignore"


class DestinationKind(StrEnum):
    CSTORE = "cstore"  # a DICOM node: C-STORE
    STOWRS = "stowrs"  # a DICOMweb root: STOW-RS


@dataclasses.dataclass(frozen=True, kw_only=True)
class Route:
    """One routing rule: conditions on the series' first instance, and what to run.

    `contrast` runs the legacy pipeline, `task` an sct_deepseg task (`crop_to_cord`: the MP2RAGE
    chain); `cord_task` adds a spinal cord segment; `action = "ignore"` drops the series.
    """

    name: str
    modality: str = "MR"
    series_description: str = ""
    protocol_name: str = ""
    image_type: tuple[str, ...] = ()
    plane: str = ""  # the file's key: orientation
    contrast: str = ""
    task: str = ""
    crop_to_cord: bool = False
    cord_task: str = ""
    action: Action = Action.SEGMENT

    def __post_init__(self) -> None:
        where = f"route {self.name!r}"
        for field in ("series_description", "protocol_name"):
            try:
                re.compile(getattr(self, field))
            except re.error as exc:
                raise UsageError(f"{where}: {field} is not a regular expression ({exc})") from None
        if self.plane:
            if self.plane not in PLANES:
                raise UsageError(f"{where}: orientation {self.plane!r} is not one of {', '.join(PLANES)}")
            object.__setattr__(self, "plane", Plane(self.plane))
        if self.action not in choices(Action):
            raise UsageError(f"{where}: action {self.action!r} is not 'segment' or 'ignore'")
        object.__setattr__(self, "action", Action(self.action))
        if self.action == Action.SEGMENT and bool(self.contrast) == bool(self.task):
            raise UsageError(f"{where}: give either contrast (legacy) or task (sct_deepseg), or action = 'ignore'")
        if self.contrast and self.contrast not in LEGACY_CONTRASTS:
            raise UsageError(f"{where}: contrast {self.contrast!r} is not one of {', '.join(LEGACY_CONTRASTS)}")
        if self.crop_to_cord and not self.task:
            raise UsageError(f"{where}: crop_to_cord goes with a task")

    @property
    def model(self) -> str:
        from lesionseg.core.catalogue import legacy_model

        return legacy_model(self.contrast) if self.contrast else self.task


@dataclasses.dataclass(frozen=True, kw_only=True)
class Destination:
    """Where results go: `kind` cstore (a PACS's `ae_title` at `host`:`port`) or stowrs (`url`,
    the DICOMweb root, e.g. http://pacs:8042/dicom-web)."""

    name: str
    kind: DestinationKind
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        where = f"destination {self.name!r}"
        if self.kind == DestinationKind.CSTORE:
            if not self.ae_title or not self.host or not 0 < int(self.port) < 65536:
                raise UsageError(f"{where}: a cstore destination needs ae_title, host and port")
        elif self.kind == DestinationKind.STOWRS:
            if not self.url.startswith(("http://", "https://")):
                raise UsageError(f"{where}: a stowrs destination needs an http(s) url")
        else:
            raise UsageError(f"{where}: kind {self.kind!r} is not 'cstore' or 'stowrs'")
        object.__setattr__(self, "kind", DestinationKind(self.kind))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """Everything the gateway needs (see the module docstring for the file's keys)."""

    ae_title: str = "LESIONSEG"
    host: str = "0.0.0.0"
    port: int = 11112
    spool: Path = Path("spool")
    stable_age: float = 10.0
    min_free_mb: float = 1024.0
    url: str = "127.0.0.1:8001"
    embedded_server: bool = False
    repository: str = ""
    metrics_port: int = 0
    workers: int = 3
    qc_capture: bool = False
    retry_first: float = 5.0
    retry_max: float = 300.0
    max_series_instances: int = 4096
    max_instance_pixels: int = 2**26
    callers: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    destinations: tuple[Destination, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < len(self.ae_title.strip()) <= 16:
            raise UsageError(f"ae_title {self.ae_title!r} must be 1-16 characters")
        if not 0 < int(self.port) < 65536:
            raise UsageError(f"port {self.port} is outside 1-65535")
        if self.workers < 1:
            raise UsageError(f"workers {self.workers} must be at least 1")
        for name in ("max_series_instances", "max_instance_pixels"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"{name} {getattr(self, name)} must be at least 1")
        if self.stable_age <= 0:
            raise UsageError(f"stable_age {self.stable_age} must be positive (seconds)")
        if not self.callers:
            raise UsageError("no [callers]: list the calling AE titles allowed to send (an open gateway is refused)")
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise UsageError(f"destination names must differ ({', '.join(names)})")

    @property
    def journal(self) -> Path:
        return self.spool / "journal.sqlite"


SCALARS = {f.name: f for f in dataclasses.fields(GatewayConfig) if f.name not in ("callers", "routes", "destinations")}


#: whole-number keys with their allowed range (and what its ends mean)
RANGES = {"port": (1, 65535, ""), "metrics_port": (0, 65535, " (0: off)"), "workers": (1, 1024, ""),
          "max_series_instances": (1, None, ""), "max_instance_pixels": (1, None, "")}


def _cast(field: dataclasses.Field, value: Any, where: str, *, text: bool = False) -> Any:
    """`value` as the type of `field`, strictly: a file's value must already have that type (no
    string for a number, no number for a boolean, no fraction for a whole number); `text` (an
    environment variable or an argument) is parsed. Raises UsageError naming `where` and the value."""
    kind = str(field.type).split(".")[-1]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text and str(value).lower() in ("1", "0", "true", "false", "yes", "no"):
            return str(value).lower() in ("1", "true", "yes")
        raise UsageError(f"{where}: {value!r} is not true or false")
    if kind == "int":
        if text and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"{where}: {value!r} is not a whole number")
        low, high, ends = RANGES.get(field.name, (None, None, ""))
        if (low is not None and value < low) or (high is not None and value > high):
            raise UsageError(f"{where}: {value} is outside {low}-{high if high is not None else ''}{ends}")
        return value
    if kind == "float":
        if text and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where}: {value!r} is not a number")
        return float(value)
    if not isinstance(value, str) and not (kind == "Path" and isinstance(value, Path)):
        raise UsageError(f"{where}: {value!r} is not a string")
    return Path(value) if kind == "Path" else value


def read_file(path: Path) -> dict:
    """The raw mapping of a TOML (.toml) or YAML (.yaml / .yml) config file.

    Raises:
        UsageError: missing or unparsable, naming the file and the line where the parser says.
    """
    if not path.is_file():
        raise UsageError(f"{path}: gateway config file does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UsageError(f"{path}: YAML configs need PyYAML (pip install pyyaml), or write it as TOML") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: not valid TOML ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the config must be a mapping of sections")
    return data


def load_config(path: Path | None, **arguments: Any) -> GatewayConfig:
    """The gateway config: `arguments` (None: not given) > LESIONSEG_GATEWAY_<KEY> > the file > defaults.

    A relative `spool` in the file is relative to the file's folder.

    Raises:
        UsageError: an unknown key or section, a bad value, naming the file and key.
    """
    data = read_file(path) if path is not None else {}
    where = str(path) if path is not None else "gateway config"
    unknown = set(data) - {"gateway", "callers", "routes", "destinations"}
    if unknown:
        raise UsageError(f"{where}: unknown section {sorted(unknown)[0]!r} (gateway, callers, routes, destinations)")
    section = dict(data.get("gateway", {}))
    bad = set(section) - set(SCALARS)
    if bad:
        raise UsageError(f"{where}: unknown key [gateway] {sorted(bad)[0]!r} (known: {', '.join(SCALARS)})")
    values: dict[str, Any] = {}
    from_file: set[str] = set()
    for name, field in SCALARS.items():
        env = os.environ.get(f"{ENV_PREFIX}GATEWAY_{name.upper()}")
        if arguments.get(name) is not None:
            values[name] = _cast(field, arguments[name], f"--{name.replace('_', '-')}", text=True)
        elif env not in (None, ""):
            values[name] = _cast(field, env, f"{ENV_PREFIX}GATEWAY_{name.upper()}", text=True)
        elif name in section:
            values[name] = _cast(field, section[name], f"{where}: [gateway] {name}")
            from_file.add(name)
    # a relative spool is relative to the file when the file gave it (or by default), else to the cwd
    file_folder = path.parent if path is not None else Path.cwd()
    spool = Path(values.get("spool", "spool"))
    if not spool.is_absolute():
        spool = (file_folder if "spool" in from_file or "spool" not in values else Path.cwd()) / spool
    values["spool"] = spool.resolve()
    callers = data.get("callers", {})
    if not isinstance(callers, dict):
        raise UsageError(f"{where}: [callers] maps calling AE titles to lists of hosts")
    for ae, hosts in callers.items():
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise UsageError(f"{where}: [callers] {ae}: {hosts!r} is not a list of hosts (write [\"{hosts}\"] for one)"
                             if isinstance(hosts, str) else f"{where}: [callers] {ae}: {hosts!r} is not a list of hosts")
    values["callers"] = {str(ae).strip(): tuple(hosts) for ae, hosts in callers.items()}
    values["routes"] = tuple(_records(Route, data.get("routes", []), where, "routes"))
    values["destinations"] = tuple(_records(Destination, data.get("destinations", []), where, "destinations"))
    return GatewayConfig(**values)


#: keys of the file whose field has another name: a route's slice `orientation` is its `plane`
FILE_KEYS = {Route: {"orientation": "plane"}}


def _records(kind, items, where: str, section: str):
    keys = FILE_KEYS.get(kind, {})
    fields = [next((k for k, v in keys.items() if v == f.name), f.name) for f in dataclasses.fields(kind)]
    if not isinstance(items, list):
        raise UsageError(f"{where}: [[{section}]] must be a list of tables")
    for i, item in enumerate(items):
        bad = set(item) - set(fields)
        if bad:
            raise UsageError(f"{where}: [[{section}]] #{i + 1}: unknown key {sorted(bad)[0]!r} (known: {', '.join(fields)})")
        item = {"name": f"{section[:-1]} {i + 1}", **{keys.get(k, k): v for k, v in item.items()}}
        types = {f.name: f for f in dataclasses.fields(kind)}
        for key, value in list(item.items()):
            at = f"{where}: [[{section}]] #{i + 1}: {key}"
            if str(types[key].type).startswith("tuple"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise UsageError(f"{at}: {value!r} is not a list of strings")
                item[key] = tuple(value)
            elif str(types[key].type) in ("int", "bool", "float", "str"):
                item[key] = _cast(types[key], value, at)
            elif not isinstance(value, str):  # an enum's name
                raise UsageError(f"{at}: {value!r} is not a string")
        yield kind(**item)
