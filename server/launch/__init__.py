"""Starting and stopping the `tritonserver` bundled in the nvidia-pytriton wheel."""
