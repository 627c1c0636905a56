"""Many images in one run: which images (`inputs`), and running them against one server (`runner`)."""
