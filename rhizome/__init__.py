"""RhizomeML: turn one person's chat exports and PDFs into a fine-tuned, retrieval-augmented chat model."""

__version__ = "0.1.0"
