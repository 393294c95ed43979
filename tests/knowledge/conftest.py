import pytest


@pytest.fixture(autouse=True)
def _knowledge_files(settings, tmp_path):
    settings.KNOWLEDGE_FILES_DIR = tmp_path / "knowledge"
