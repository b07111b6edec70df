"""``python -m local.scripted_backend``: run the scripted backend under uvicorn."""

from local.scripted_backend.app import main

main()
