"""Benchmark: the hospital path (DICOM in, DICOM SEG out through the gateway) against the NIfTI batch
CLI on the same volumes, and the gateway's receive rate against dcmtk's storescp (the wire limit).

N series (default 16) are made from the real T2*w volume of ../shared (each a variant: intensities
scaled by 1 + 0.01 i and small deterministic noise on the nonzero voxels, its own UIDs), written as
MR Image Storage with `tests/dicom_writer.py`; the NIfTI inputs are their
`dicom2nifti` conversions, so both paths segment identical voxels with `deepseg_lesion_t2s` (the
real SCT weights) on ONE warm embedded Triton server. In one run:

  nifti  `lesionseg deepseg-lesion -i <folder of N NIfTI> -c t2s -j 2 -url ...`: the CLI process
         from spawn to exit (outputs: SCT's three NIfTI files + lesion statistics per series).
  dicom  `storescu` sends the N series to `lesionseg gateway` (`--workers`, stable age
         `--stable-age`), which segments and C-STOREs each SEG and SR to a real Orthanc: from
         storescu's start (first byte in) until Orthanc holds N SEG series (polled every 0.2 s).
         The stable age is part of the path (a series is complete only after it): it delays the
         last series by that much.
  wire   storescu of the same files to `storescp` alone, and to a gateway that ignores every series
         (receive, spool with fsync, journal): instances per second of each.

Printed: seconds and series/min of nifti and dicom, dicom/nifti (target >= 0.8), instances/s of
storescp and the gateway, gateway/storescp.

    .venv/bin/python bench/pacs.py [--n 16] [--stable-age 1] [--workers 3] [--shared ../shared]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real-peer helpers of the gateway tests (Orthanc, storescp, the gateway process)

from pacs_peers import GatewayProcess, Orthanc, StoreSCP, free_port, wait_for  # noqa: E402


def make_series(shared: Path, root: Path, n: int) -> list[Path]:
    """N variant series of the T2*w volume under root/dicom/sNN/, and their NIfTI conversions under root/nifti/."""
    import nibabel as nib

    from lesionseg.client.dicom.convert import dicom_to_nifti
    from dicom_writer import SeriesSpec, write_series

    image = nib.load(str(shared / "sct_testing_data" / "t2s" / "t2s.nii.gz"))
    data = np.asarray(image.dataobj, dtype=np.float32)
    sigma = 0.005 * float(data[data != 0].std())
    folders = []
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        variant = np.where(data != 0, data * (1 + 0.01 * i) + rng.normal(0.0, sigma, data.shape), 0)
        folder = root / "dicom" / f"s{i + 1:02d}"
        write_series(variant, image.affine, folder, SeriesSpec(seed=f"bench-{i}", description="T2star axial",
                                                             patient_id=f"BENCH{i:02d}", study_uid=f"2.25.{77000 + i}"))
        dicom_to_nifti(folder, root / "nifti" / f"s{i + 1:02d}.nii.gz")
        folders.append(folder)
    return folders


def gateway_config(path: Path, *, port: int, url: str, stable_age: float, routes: str, destinations: str, workers: int = 2) -> Path:
    path.write_text(f"""
[gateway]
host = "127.0.0.1"
port = {port}
spool = "{path.parent / (path.stem + '_spool')}"
stable_age = {stable_age}
min_free_mb = 1
url = "{url}"
workers = {workers}

[callers]
STORESCU = []
{routes}
{destinations}
""")
    return path


#: dcmtk leaves Nagle's algorithm on unless TCP_NODELAY=1 is in its environment; then every C-STORE
#: waits for a delayed ACK (~11 instances/s on loopback, whatever the receiver): the benchmark
#: runs dcmtk's sender and receiver with it set, as a tuned modality would.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def storescu(folder: Path, port: int, called: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(["storescu", "+sd", "+r", "-aet", "STORESCU", "-aec", called, "127.0.0.1", str(port), str(folder)],
                          capture_output=True, text=True, timeout=600, env=DCMTK_ENV)
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-1000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--stable-age", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=3, help="the gateway's segmentation workers")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()

    from lesionseg.export.legacy import export_sct_legacy
    from lesionseg.server.launch.embedded import EmbeddedServer, ServerSettings, free_ports

    with tempfile.TemporaryDirectory(prefix="lesionseg-bench-pacs-") as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        export_sct_legacy(args.shared / "sct_models", repo, contrast="t2s")
        folders = make_series(args.shared, tmp, args.n)
        instances = sum(len(list(f.glob("*.dcm"))) for f in folders)
        grpc, http, metrics = free_ports(3)
        with EmbeddedServer(ServerSettings(repository=repo, grpc_port=grpc, http_port=http, metrics_port=metrics)) as server:
            url = server.settings.grpc_url
            lesionseg = [sys.executable, "-m", "lesionseg.client.cli", "-q"]
            warm = tmp / "warm"
            subprocess.run([*lesionseg, "deepseg-lesion", "-i", str(tmp / "nifti" / "s01.nii.gz"), "-c", "t2s", "-ofolder", str(warm),
                            "-url", url], check=True)

            started = time.perf_counter()
            subprocess.run([*lesionseg, "deepseg-lesion", "-i", str(tmp / "nifti"), "-c", "t2s", "-ofolder", str(tmp / "nifti_out"),
                            "-j", "2", "-url", url], check=True, stdout=subprocess.DEVNULL)
            nifti_seconds = time.perf_counter() - started

            port = free_port()
            orthanc = Orthanc(tmp / "orthanc", {"lesionseg": ("LESIONSEG", "127.0.0.1", port)})
            try:
                route = '[[routes]]\nname = "t2star"\nseries_description = "(?i)t2star"\ncontrast = "t2s"\n'
                destination = (f'[[destinations]]\nname = "orthanc"\nkind = "cstore"\nae_title = "ORTHANC"\n'
                               f'host = "127.0.0.1"\nport = {orthanc.dicom_port}\n')
                config = gateway_config(tmp / "segment.toml", port=port, url=url, stable_age=args.stable_age,
                                        routes=route, destinations=destination, workers=args.workers)
                gateway = GatewayProcess(config, tmp / "segment.log").start(port)
                try:
                    started = time.perf_counter()
                    storescu(tmp / "dicom", port, "LESIONSEG")
                    wait_for(lambda: len(orthanc.series_with_modality("SEG")) >= args.n, 1800, "every SEG in Orthanc")
                    dicom_seconds = time.perf_counter() - started
                finally:
                    gateway.stop()
            finally:
                orthanc.stop()

        archive = StoreSCP(tmp / "storescp", env=DCMTK_ENV).start()
        try:
            storescp_seconds = storescu(tmp / "dicom", archive.port, "ARCHIVE")
        finally:
            archive.stop()
        port = free_port()
        config = gateway_config(tmp / "receive.toml", port=port, url="127.0.0.1:1", stable_age=3600, routes="", destinations="")
        gateway = GatewayProcess(config, tmp / "receive.log").start(port)
        try:
            gateway_seconds = storescu(tmp / "dicom", port, "LESIONSEG")
        finally:
            gateway.stop()

    def per_minute(seconds: float) -> float:
        return 60.0 * args.n / seconds

    print(f"series: {args.n} x {instances // args.n} instances (T2*w, deepseg_lesion_t2s), stable age {args.stable_age:g} s, "
          f"{args.workers} gateway workers, batch CLI -j 2")
    print(f"nifti  batch CLI          {nifti_seconds:8.1f} s  {per_minute(nifti_seconds):7.1f} series/min")
    print(f"dicom  storescu->gateway->Orthanc {dicom_seconds:8.1f} s  {per_minute(dicom_seconds):7.1f} series/min")
    print(f"dicom/nifti throughput    {nifti_seconds / dicom_seconds:8.2f}  (target >= 0.8)")
    print(f"wire   storescp           {instances / storescp_seconds:8.1f} instances/s")
    print(f"wire   gateway (spool, fsync, journal) {instances / gateway_seconds:8.1f} instances/s")
    print(f"gateway/storescp receive  {storescp_seconds / gateway_seconds:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
