"""QC reports in SCT's layout: the images (`mosaic`), the entries and index page (`report`), PNG encoding."""
