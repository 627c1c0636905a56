"""nibabel as lesionseg imports it (`lesionseg.core.nibabel_import`): without pydicom, which
nibabel would import eagerly; a NIfTI file's DICOM header extension then stays raw bytes, read
and written back unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

CHILD = """
import sys
from pathlib import Path
from lesionseg.core.nifti import load_nifti, save_nifti
source, target = Path(sys.argv[1]), Path(sys.argv[2])
image = load_nifti(source)
save_nifti((image.data > 0).astype("uint8"), image.affine, target, like=image.header)
print("pydicom" in sys.modules)
"""


def test_a_nifti_command_does_not_import_pydicom_and_keeps_dicom_extensions(tmp_path: Path) -> None:
    raw = b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100"  # a DICOM element, as dcm2niix's -e y would embed
    image = nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4) + 1, np.eye(4))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(2, raw))
    source = tmp_path / "with_dicom_extension.nii.gz"
    nib.save(image, str(source))
    target = tmp_path / "mask.nii.gz"
    done = subprocess.run([sys.executable, "-c", CHILD, str(source), str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"  # reading and writing NIfTI loaded no pydicom
    written = nib.load(str(target)).header.extensions
    assert [e.get_code() for e in written] == [2]
    assert written[0].content[:len(raw)] == raw  # the extension's bytes (nibabel pads them to 16), unchanged
