"""Makes bnorm's thread pool visible to threadpoolctl and limited by it, as
NumPy's BLAS and OpenMP runtimes are:

    from threadpoolctl import threadpool_info, threadpool_limits
    with threadpool_limits(limits=1):            # or user_api="openmp"
        bnorm.batch_norm_train(x)                # one thread

bnorm registers a controller for libbnorm when threadpoolctl (>= 3.0, which
lets libraries register their own) is installed. Its user_api is "openmp",
since bnorm's threads are OpenMP threads (or the host's, see the C API)."""

from __future__ import annotations


def register() -> bool:
    """Registers the controller; False when threadpoolctl is absent or too old."""
    import importlib.util
    if importlib.util.find_spec("threadpoolctl") is None:
        return False
    import ctypes

    import threadpoolctl
    if not hasattr(threadpoolctl, "register") or not hasattr(threadpoolctl, "LibController"):
        return False

    class BnormController(threadpoolctl.LibController):
        user_api = "openmp"
        internal_api = "bnorm"
        filename_prefixes = ("libbnorm",)
        check_symbols = ("bnorm_get_num_threads", "bnorm_set_num_threads")

        def get_num_threads(self):
            return self.dynlib.bnorm_get_num_threads()

        def set_num_threads(self, num_threads):
            self.dynlib.bnorm_set_num_threads(int(num_threads))

        def get_version(self):
            fn = self.dynlib.bnorm_version_string
            fn.restype = ctypes.c_char_p
            return fn().decode()

        def set_additional_attributes(self):
            fn = self.dynlib.bnorm_threading_backend
            fn.restype = ctypes.c_char_p
            self.threading_layer = fn().decode()

    threadpoolctl.register(BnormController)
    return True
