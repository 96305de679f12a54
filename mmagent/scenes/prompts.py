"""The prompts the scene-world VLM is trained on: shared by the trainer and the scene captioner."""

CAPTION_PROMPT = "Write a short caption for the image."
DESCRIBE_PROMPT = "Describe the image in detail."
