"""The prompts the scene-world VLM is trained on: shared by the trainer, the scene captioner and the
adapter route (core holds them so that plugins and graphs import them from here, never the reverse)."""

CAPTION_PROMPT = "Write a short caption for the image."
DESCRIBE_PROMPT = "Describe the image in detail."
#: The system prompt of the adapter route (graphs/adapter.py), which the VLM is trained under.
QA_SYSTEM = "Answer the question about the image(s) briefly and exactly."
