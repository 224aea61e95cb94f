"""The layout of a run directory: the names of its files (``poisoncert.runs`` describes them).

Its own module so that both the run directory (``runs``) and its verification (``runcheck``)
name the files without importing each other.
"""

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
SEEDS = "seeds.npy"
CLEAN_INDICES = "clean_indices.npy"
PREDICTIONS = "predictions.npy"
VOTES = "votes.npy"
LABELS = "labels.npy"
SUBSET_SIZES = "subset_sizes.npy"
CLASSIFIERS = "classifiers.csv"
CERTIFICATES = "certificates.csv"
CERTIFIED_ACCURACY = "certified_accuracy.csv"
CERTIFIED_ACCURACY_PNG = "certified_accuracy.png"
CERTIFY_JSON = "certify.json"
PHASE2 = "phase2.json"
CHUNKS = "chunks"
WEIGHTS = "weights"
ENSEMBLE = "ensemble.json"
RANKS = "ranks.npy"            # run.store_ranks: every classifier's ranking of the classes
RANKS_DIR = "ranks"            # ... per chunk, joined into ranks.npy
NEIGHBORS = "neighbors.npy"    # knn runs: the labels of each test point's nearest samples
EDITS = "edits.npz"            # an updated run: its edits of the original training set
#: Files whose SHA-256 the manifest of a finished run records (when present), besides the
#: ``weights/`` files: everything ``certify`` reads and what it stands on.
CHECKSUMMED = (CONFIG, SEEDS, CLEAN_INDICES, PREDICTIONS, VOTES, LABELS, SUBSET_SIZES,
               CLASSIFIERS, PHASE2, ENSEMBLE, RANKS, NEIGHBORS, EDITS)
