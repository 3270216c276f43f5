"""Coverage-guided fuzz targets (atheris); run by hand, never by the tests."""
