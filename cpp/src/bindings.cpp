// drift._C: converts Python arguments (DLPack capsules, ints) and forwards to the drivers.
// No algorithm lives here. Views are parsed with the GIL held; the work runs without it.
#include <pybind11/pybind11.h>

#include "drivers.hpp"
#include "tensor_view.hpp"

namespace py = pybind11;
using drift::TensorView;
using drift::view_from_capsule;

namespace {

drift::LcsArgs lcs_args(py::object y, py::object yp, py::object yl, py::object ypl, py::object my, py::object myp,
                        py::object len) {
  return {view_from_capsule(y.ptr(), "y"),          view_from_capsule(yp.ptr(), "y_prime"),
          view_from_capsule(yl.ptr(), "y_lengths"), view_from_capsule(ypl.ptr(), "y_prime_lengths"),
          view_from_capsule(my.ptr(), "mask_y"),    view_from_capsule(myp.ptr(), "mask_y_prime"),
          view_from_capsule(len.ptr(), "lcs_length")};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "drift native core (no libtorch): batched LCS masks and fused vocabulary losses";

  m.def("lcs_mask_cpu",
        [](py::object y, py::object yp, py::object yl, py::object ypl, py::object my, py::object myp, py::object len) {
          auto args = lcs_args(y, yp, yl, ypl, my, myp, len);
          py::gil_scoped_release release;
          drift::lcs_cpu(args);
        },
        py::arg("y"), py::arg("y_prime"), py::arg("y_lengths"), py::arg("y_prime_lengths"), py::arg("mask_y"),
        py::arg("mask_y_prime"), py::arg("lcs_length"));
  m.def("lcs_mask_cuda",
        [](py::object y, py::object yp, py::object yl, py::object ypl, py::object my, py::object myp, py::object len,
           py::object scratch, std::uintptr_t stream) {
          auto args = lcs_args(y, yp, yl, ypl, my, myp, len);
          TensorView s = view_from_capsule(scratch.ptr(), "scratch");
          py::gil_scoped_release release;
          drift::lcs_cuda(args, s, stream);
        },
        py::arg("y"), py::arg("y_prime"), py::arg("y_lengths"), py::arg("y_prime_lengths"), py::arg("mask_y"),
        py::arg("mask_y_prime"), py::arg("lcs_length"), py::arg("scratch"), py::arg("stream"));
  m.def("lcs_cuda_max_length", &drift::lcs_cuda_max_length);

  m.def("get_num_threads", &drift::get_num_threads);
  m.def("set_num_threads", &drift::set_num_threads, py::arg("n"));
  m.def("cuda_compiled", &drift::cuda_compiled);
  m.def("cuda_device_count", [] {
    py::gil_scoped_release release;
    return drift::cuda_device_count();
  });
  m.attr("cuda_archs") = DRIFT_CUDA_ARCHS;
#ifdef DRIFT_SANITIZE
  m.attr("sanitized") = true;
#else
  m.attr("sanitized") = false;
#endif
}
