"""What the analysis knows about the world outside the notebook.

The scope analysis is exact about names; what a *call* does to its arguments cannot be known
statically. These tables record well-established library behaviour so that common calls
(``model.fit(X, y)``, ``np.mean(x)``, ``print(df)``) are not taken as mutations, while anything
unknown stays conservative (may mutate), which costs parallelism, never correctness.
"""

from __future__ import annotations

import builtins

# Names that exist in every IPython kernel without a binding in the notebook.
KERNEL_NAMES = frozenset(dir(builtins)) | {
    "get_ipython",
    "display",
    "__name__",
    "__doc__",
    "__builtins__",
    "__spec__",
    "__loader__",
    "__package__",
    "exit",
    "quit",
}

# Names that read IPython's output history: they cannot travel between kernels.
HISTORY_NAMES = frozenset({"_", "__", "___", "In", "Out", "_i", "_ii", "_iii", "_oh", "_ih", "_dh"})

# Builtins that never mutate their arguments.
PURE_BUILTINS = frozenset(
    {
        "abs", "all", "any", "ascii", "bin", "bool", "bytes", "callable", "chr", "complex",
        "dict", "dir", "divmod", "enumerate", "filter", "float", "format", "frozenset",
        "getattr", "hasattr", "hash", "hex", "id", "int", "isinstance", "issubclass", "iter",
        "len", "list", "map", "max", "min", "oct", "ord", "pow", "print", "range", "repr",
        "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "type", "zip",
        "display", "open", "input", "help", "vars", "locals", "globals", "object", "super",
        "memoryview", "bytearray", "property", "staticmethod", "classmethod",
    }
)  # fmt: skip

# Builtins that change their first argument.
MUTATING_BUILTINS = frozenset({"setattr", "delattr", "next"})

# Top-level packages whose functions do not modify the arrays/frames passed to them
# (they return new objects); the exceptions are listed in LIBRARY_MUTATORS.
PURE_LIBRARIES = frozenset(
    {
        "numpy", "pandas", "scipy", "sklearn", "matplotlib", "seaborn", "math", "statistics",
        "json", "os", "sys", "re", "itertools", "functools", "operator", "collections",
        "string", "time", "datetime", "pathlib", "textwrap", "pprint", "copy", "warnings",
        "logging", "csv", "pickle", "joblib", "decimal", "fractions", "typing", "dataclasses",
        "hashlib", "base64", "uuid", "glob", "shutil", "urllib", "io", "gzip", "zipfile",
        "xgboost", "lightgbm", "statsmodels", "plotly", "PIL", "IPython", "tqdm", "cloudpickle",
        "pyarrow", "sympy", "networkx", "random", "torch", "tensorflow", "keras",
    }
)  # fmt: skip

# Library functions that do change an argument (by position).
LIBRARY_MUTATORS: dict[str, int] = {
    "random.shuffle": 0,
    "numpy.random.shuffle": 0,
    "numpy.copyto": 0,
    "numpy.put": 0,
    "numpy.place": 0,
    "numpy.putmask": 0,
    "numpy.fill_diagonal": 0,
    "numpy.random.Generator.shuffle": 0,
    "copy.copy": -1,  # never: listed so the pure rule is explicit
    "heapq.heappush": 0,
    "heapq.heappop": 0,
    "heapq.heapify": 0,
    "bisect.insort": 0,
    "json.dump": 1,
    "pickle.dump": 1,
}

# Method names that return a value without changing the receiver, across numpy, pandas,
# scikit-learn, matplotlib and the standard containers. `inplace=True` overrides.
PURE_METHODS = frozenset(
    {
        "copy", "head", "tail", "describe", "info", "sum", "mean", "median", "std", "var",
        "min", "max", "count", "nunique", "unique", "value_counts", "isnull", "isna",
        "notnull", "notna", "any", "all", "predict", "predict_proba", "predict_log_proba",
        "decision_function", "score", "score_samples", "transform", "inverse_transform",
        "get_params", "get", "keys", "values", "items", "format", "startswith", "endswith",
        "split", "rsplit", "join", "strip", "lstrip", "rstrip", "lower", "upper", "replace",
        "reshape", "astype", "tolist", "to_numpy", "to_list", "to_dict", "to_string",
        "to_frame", "groupby", "agg", "aggregate", "apply", "map", "applymap", "merge",
        "drop", "dropna", "fillna", "rename", "sort_values", "sort_index", "reset_index",
        "set_index", "pivot", "pivot_table", "melt", "query", "filter", "corr", "cov", "round",
        "abs", "cumsum", "cumprod", "cummax", "cummin", "diff", "pct_change", "shift",
        "rolling", "expanding", "dot", "flatten", "ravel", "transpose", "argmax", "argmin",
        "argsort", "nonzero", "clip", "item", "issubset", "issuperset", "union",
        "intersection", "difference", "symmetric_difference", "index", "find", "rfind",
        "encode", "decode", "isdigit", "isalpha", "isalnum", "isspace", "title", "capitalize",
        "zfill", "center", "ljust", "rjust", "select_dtypes", "memory_usage", "duplicated",
        "drop_duplicates", "isin", "between", "where", "mask", "idxmax", "idxmin", "nlargest",
        "nsmallest", "quantile", "equals", "iterrows", "itertuples", "iteritems",
        "get_feature_names_out", "get_support", "kneighbors", "staged_predict", "to_csv",
        "to_parquet", "to_json", "to_pickle", "to_excel", "to_feather", "to_markdown",
        "to_html", "to_latex", "savefig", "get_xlim", "get_ylim", "get_legend_handles_labels",
        "conjugate", "squeeze", "swapaxes", "take", "compress", "searchsorted", "prod",
        "ptp", "trace", "view", "tobytes", "explode", "stack", "unstack", "droplevel",
        "pipe", "assign", "combine", "concat", "append_to", "asfreq", "interpolate", "rank",
        "mode", "skew", "kurt", "sem", "mad", "first", "last", "nth", "size", "ngroups",
        "get_group", "transform_one", "to_period", "to_timestamp", "tz_localize", "tz_convert",
        "strftime", "isoformat", "timestamp", "total_seconds", "bit_length", "hex",
        "is_integer", "as_integer_ratio", "splitlines", "partition", "rpartition", "casefold",
        "expandtabs", "count_nonzero", "sample_weight", "get_depth", "get_n_leaves",
        "get_metadata_routing", "decision_path", "apply_along", "get_xticks", "get_yticks",
        "get_figure", "get_title", "get_xlabel", "get_ylabel", "tostring", "fromkeys",
    }
)  # fmt: skip

# Methods on a fitted-model-like receiver that draw from numpy's global RNG when the object
# was made without `random_state` (scikit-learn) or called without it (pandas `sample`).
RNG_METHODS = frozenset(
    {"fit", "fit_transform", "fit_predict", "fit_resample", "partial_fit", "sample", "split"}
)

# Functions of the `random` module that use (and advance) its global generator.
RANDOM_FUNCS = frozenset(
    {
        "random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform",
        "triangular", "gauss", "normalvariate", "lognormvariate", "expovariate",
        "vonmisesvariate", "gammavariate", "betavariate", "paretovariate", "weibullvariate",
        "getrandbits", "randbytes", "binomialvariate",
    }
)  # fmt: skip
# numpy.random attributes that do NOT touch the global RandomState.
NUMPY_RANDOM_NOT_GLOBAL = frozenset(
    {
        "RandomState", "default_rng", "Generator", "SeedSequence", "BitGenerator", "PCG64",
        "PCG64DXSM", "MT19937", "Philox", "SFC64", "get_state", "bit_generator",
    }
)  # fmt: skip

# Global RNGs the runtime carries between steps (pseudo-variable names).
RNG_STATES = ("random", "numpy.random")

# Seeds of RNGs the runtime does not carry: warn, the user must seed where it is used.
UNTRACKED_SEEDS = frozenset(
    {
        "torch.manual_seed", "torch.cuda.manual_seed", "torch.cuda.manual_seed_all",
        "tensorflow.random.set_seed", "tensorflow.set_random_seed", "keras.utils.set_random_seed",
        "mxnet.random.seed", "jax.random.PRNGKey",
    }
)  # fmt: skip

# Calls that set process-wide state later cells silently rely on. Top-level, unconditional
# ones are replayed at the start of every later step; others get a warning.
STATE_SETTERS = frozenset(
    {
        "pandas.set_option", "pandas.reset_option", "pandas.options", "numpy.set_printoptions",
        "numpy.seterr", "warnings.filterwarnings", "warnings.simplefilter",
        "warnings.resetwarnings", "matplotlib.use", "matplotlib.rc", "matplotlib.rcParams",
        "matplotlib.style.use", "matplotlib.pyplot.style.use", "matplotlib.pyplot.rc",
        "matplotlib.pyplot.rcParams", "matplotlib.pyplot.ion", "matplotlib.pyplot.ioff",
        "matplotlib.pyplot.switch_backend", "seaborn.set", "seaborn.set_theme",
        "seaborn.set_style", "seaborn.set_context", "seaborn.set_palette",
        "seaborn.set_color_codes", "sys.path", "sys.setrecursionlimit", "os.chdir",
        "os.environ", "os.putenv", "os.umask", "sklearn.set_config", "logging.basicConfig",
        "logging.disable", "locale.setlocale", "torch.set_num_threads",
        "torch.set_default_dtype", "numpy.random.set_state", "random.setstate",
        "IPython.display.set_matplotlib_formats",
        "matplotlib_inline.backend_inline.set_matplotlib_formats",
    }
)  # fmt: skip

# Line magics that set kernel state later cells rely on (replayed in later steps).
STATE_MAGICS = frozenset(
    {"matplotlib", "config", "load_ext", "reload_ext", "autoreload", "aimport", "env",
     "precision", "pylab", "cd", "xmode", "autoawait"}
)  # fmt: skip
# Magics whose argument is Python code run in the user namespace.
CODE_LINE_MAGICS = frozenset({"time", "timeit", "prun", "capture"})
CODE_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
# Magics that define names we cannot see.
OPAQUE_MAGICS = frozenset({"run", "store", "load", "macro", "sql", "R", "Rpull"})

# Calls that read or write files given by a literal path (argument index of the path).
FILE_WRITERS: dict[str, int] = {
    "to_csv": 0, "to_parquet": 0, "to_pickle": 0, "to_json": 0, "to_excel": 0,
    "to_feather": 0, "to_hdf": 0, "to_stata": 0, "to_html": 0, "to_latex": 0, "to_markdown": 0,
    "savefig": 0, "numpy.save": 0, "numpy.savez": 0, "numpy.savez_compressed": 0,
    "numpy.savetxt": 0, "joblib.dump": 1, "write_text": -1, "write_bytes": -1,
    "imsave": 0, "imwrite": 0, "to_file": 0, "save_model": 0, "save": 0,
}  # fmt: skip
FILE_READERS: dict[str, int] = {
    "read_csv": 0, "read_parquet": 0, "read_pickle": 0, "read_json": 0, "read_excel": 0,
    "read_feather": 0, "read_hdf": 0, "read_table": 0, "read_stata": 0, "read_fwf": 0,
    "numpy.load": 0, "numpy.loadtxt": 0, "numpy.genfromtxt": 0, "numpy.fromfile": 0,
    "joblib.load": 0, "imread": 0, "read_text": -1, "read_bytes": -1, "load_model": 0,
    "load_workbook": 0,
}  # fmt: skip
# Method names of both tables (`x.to_csv`, `Path(…).read_text`), dotted names left out.
FILE_METHODS = frozenset(n for n in (*FILE_WRITERS, *FILE_READERS) if "." not in n)
# What `Path('x.txt')` resolves to: its read_text/write_text/… act on that literal path.
PATH_TYPES = frozenset(
    {"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath", "pathlib.WindowsPath"}
)

# String-evaluating methods whose `@name` references read variables (pandas).
QUERY_METHODS = frozenset({"query", "eval"})
