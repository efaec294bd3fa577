"""The part of CuPy's API that the CuPy stand-in (cupy_contract.py, cupy_standin.py) offers: names that
CuPy 14 has and NumPy computes the same way. A name missing here is an AttributeError on the emulated
backend, as a name missing from CuPy is on a GPU; test_cupy_namespace.py checks every name here
against the real cupy module when it is installed. Add a name only after checking CuPy has it.
"""

# elementwise kernels: device arrays and scalars only (a host array or a list is a TypeError)
UFUNCS = frozenset("""
    add subtract multiply divide true_divide floor_divide power float_power negative positive absolute abs
    fabs exp exp2 expm1 log log2 log10 log1p sqrt cbrt square reciprocal sign copysign sin cos tan arcsin
    arccos arctan arctan2 sinh cosh tanh arcsinh arccosh arctanh hypot deg2rad rad2deg maximum minimum fmax
    fmin floor ceil trunc rint isfinite isnan isinf signbit logical_and logical_or logical_not logical_xor
    equal not_equal less less_equal greater greater_equal bitwise_and bitwise_or bitwise_xor invert
    left_shift right_shift remainder mod fmod matmul conj conjugate heaviside nextafter ldexp logaddexp
    logaddexp2
""".split())

# other functions, computed by NumPy's function of the same name
FUNCTIONS = frozenset("""
    copy zeros ones full zeros_like ones_like full_like arange linspace logspace eye identity diag
    diagonal diagflat tri triu tril meshgrid reshape ravel transpose swapaxes moveaxis rollaxis expand_dims
    squeeze broadcast_to broadcast_arrays atleast_1d atleast_2d atleast_3d concatenate stack vstack hstack
    dstack column_stack split array_split tile repeat flip fliplr flipud roll pad take_along_axis
    put_along_axis where clip around round cumsum cumprod diff sum prod mean var std max min amax amin
    argmax argmin all any count_nonzero nansum nanmean nanmax nanmin average median percentile quantile
    dot vdot inner outer einsum tensordot kron trace cross sort argsort argpartition partition searchsorted
    unique nonzero argwhere flatnonzero compress extract bincount histogram allclose isclose array_equal
    array_equiv unravel_index ravel_multi_index indices result_type promote_types can_cast shape ndim size
    isscalar may_share_memory shares_memory nan_to_num interp ascontiguousarray asfortranarray
""".split())

# functions whose CuPy version copies host arrays over itself (cupy.asarray on its inputs)
HOST_INPUTS = frozenset("allclose isclose triu tril".split())

# NumPy returns a Python bool, CuPy a 0-d device array (reading it is a transfer)
RETURN_ARRAYS = frozenset("allclose array_equal array_equiv".split())

# CuPy reads a count back to the host to size the result: a hidden transfer
SYNCING = frozenset("nonzero argwhere flatnonzero unique compress extract".split())

# dtypes, scalar types and constants: NumPy's own objects, as in CuPy
TYPES = frozenset("""
    float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool_ intp uintp complex64
    complex128 generic number integer floating inexact signedinteger unsignedinteger dtype finfo iinfo pi e
    inf nan newaxis euler_gamma
""".split())

# ndarray methods both have (take, get, set, item, tolist, tobytes and scatter_add are written out)
METHODS = frozenset("""
    all any argmax argmin argpartition argsort astype choose clip compress conj conjugate copy cumprod
    cumsum diagonal dot fill flatten max mean min nonzero partition prod put ravel repeat reshape round
    searchsorted sort squeeze std sum swapaxes trace transpose var view
""".split())

LINALG = frozenset("cholesky det eigh eigvalsh inv lstsq matrix_power matrix_rank norm pinv qr slogdet solve svd"
                   .split())

# cupy.random.Generator's methods (it has no permutation, choice or shuffle)
RANDOM_METHODS = frozenset("""
    beta binomial chisquare exponential gamma geometric integers poisson random standard_exponential
    standard_gamma standard_normal uniform
""".split())
