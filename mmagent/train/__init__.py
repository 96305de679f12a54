"""Training mmagent's own scene-world VLM: a vision encoder (two-tower pretraining) and a LLaVA
adapter into a frozen LLM. Imports torch: only the `mmagent train` commands load this package."""
