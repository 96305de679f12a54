"""Routing by measured competence: which route (tools, adapter, hybrid, unified, or a plugin's) to
send a request to, learned from `mmagent eval` results.

    features.py     cheap request features: image statistics, modality flags
    competence.py   `Competence`: expected accuracy and latency per route and question type, with a
                    small learned question-type classifier over MiniLM embeddings + image features;
                    `fit(eval_dirs, embedder)` builds one (`mmagent route fit`)
    policy.py       `choose(options, settings)`: quality, latency, local-only, or a latency budget

Nothing here imports torch, transformers or langgraph; scikit-learn is imported by `fit` only.
The router graph itself is `mmagent.graphs.router` (`--pipeline auto`).
"""

from .competence import Competence, competence_path, fit, load_competence
from .features import IMAGE_FEATURES, image_features
from .policy import Decision, RouteOption, choose

__all__ = ["Competence", "Decision", "IMAGE_FEATURES", "RouteOption", "choose", "competence_path", "fit",
           "image_features", "load_competence"]
