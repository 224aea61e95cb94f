"""The layout of a run directory: the names of its files.

Layout (every file written atomically: a temporary file in the same folder, fsync, rename)::

    RUN_DIR/
      .lock                  held (flock) by the process training or certifying the run
      config.yaml            the resolved experiment config
      manifest.json          versions, code revision, start time, data checksums, config hash;
                             once finished, the SHA-256 of every file below that certify
                             reads (``checksums``) and of the manifest itself
      seeds.npy              uint64 (T,): selection.model_seed(root_seed, i) of classifier i
      clean_indices.npy      int64: training-set indices of the known-clean part D^c
      chunks/chunk-00000.npz start, stop, seeds, sizes (|drawn part of D^p|), predictions int16,
                             config_hash (of the config that trained it)
      weights/chunk-00000.safetensors   the chunk's classifier weights (torch models,
                             unless training.save_weights is false)
      ensemble.json          with the weights: preprocessing, classes and selection facts
                             (poisoncert.Ensemble)
      ranks/chunk-00000.npy, ranks.npy   with run.store_ranks: int8 (T, n_test, C), each
                             classifier's rank of every class (0 = preferred; run-off election)
      neighbors.npy          knn runs: int16 (n_test, depth), labels of the nearest samples
      edits.npz              an updated run (poisoncert update): its edits of the training set
      predictions.npy        int16 (T, n_test), -1 for an abstaining base classifier
      votes.npy              int64 (n_test, n_classes): vote counts
      labels.npy             int64 (n_test,): true test labels
      subset_sizes.npy       int64 (T,): size of each drawn sub-dataset of D^p
      classifiers.csv        one row per base classifier: index, seed, subset_size,
                             test_accuracy (empty when it abstains): the paper's Figure 5
      certificates.csv, certified_accuracy.csv, certified_accuracy.png, certify.json
                             (written by ``poisoncert certify``)

Its own module so that the run directory (``runs``, ``runchunks``) and its verification
(``runcheck``) name the files without importing each other.
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
