// drift._C: converts Python arguments (DLPack capsules, ints) and forwards to the drivers.
// No algorithm lives here. Views are parsed with the GIL held; the work runs without it.
#include <pybind11/pybind11.h>

#include "drivers.hpp"
#include "dlpack_capsule.hpp"

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

TensorView cap(const py::object& o, const char* name) { return view_from_capsule(o.ptr(), name); }

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

  // Fused vocabulary losses (drivers.hpp documents each view).
  m.def("token_logps_forward_cpu",
        [](py::object logits, py::object labels, py::object mask, py::object logps, py::object lse) {
          drift::TokenLogpsForwardArgs a{cap(logits, "logits"), cap(labels, "labels"), cap(mask, "mask"),
                                         cap(logps, "logps"), cap(lse, "lse")};
          py::gil_scoped_release release;
          drift::token_logps_forward_cpu(a);
        },
        py::arg("logits"), py::arg("labels"), py::arg("mask"), py::arg("logps"), py::arg("lse"));
  m.def("token_logps_forward_cuda",
        [](py::object logits, py::object labels, py::object mask, py::object logps, py::object lse,
           std::uintptr_t stream) {
          drift::TokenLogpsForwardArgs a{cap(logits, "logits"), cap(labels, "labels"), cap(mask, "mask"),
                                         cap(logps, "logps"), cap(lse, "lse")};
          py::gil_scoped_release release;
          drift::token_logps_forward_cuda(a, stream);
        },
        py::arg("logits"), py::arg("labels"), py::arg("mask"), py::arg("logps"), py::arg("lse"), py::arg("stream"));
  m.def("token_logps_backward_cpu",
        [](py::object grad, py::object logits, py::object labels, py::object mask, py::object lse, py::object out) {
          drift::TokenLogpsBackwardArgs a{cap(grad, "grad_logps"), cap(logits, "logits"), cap(labels, "labels"),
                                          cap(mask, "mask"), cap(lse, "lse"), cap(out, "grad_logits")};
          py::gil_scoped_release release;
          drift::token_logps_backward_cpu(a);
        },
        py::arg("grad_logps"), py::arg("logits"), py::arg("labels"), py::arg("mask"), py::arg("lse"),
        py::arg("grad_logits"));
  m.def("token_logps_backward_cuda",
        [](py::object grad, py::object logits, py::object labels, py::object mask, py::object lse, py::object out,
           std::uintptr_t stream) {
          drift::TokenLogpsBackwardArgs a{cap(grad, "grad_logps"), cap(logits, "logits"), cap(labels, "labels"),
                                          cap(mask, "mask"), cap(lse, "lse"), cap(out, "grad_logits")};
          py::gil_scoped_release release;
          drift::token_logps_backward_cuda(a, stream);
        },
        py::arg("grad_logps"), py::arg("logits"), py::arg("labels"), py::arg("mask"), py::arg("lse"),
        py::arg("grad_logits"), py::arg("stream"));
  m.def("oal_forward_cpu",
        [](py::object logits, py::object targets, py::object lmask, py::object tmask, py::object tlogps, py::object lse,
           py::object argmax) {
          drift::OalForwardArgs a{cap(logits, "logits"),         cap(targets, "targets"), cap(lmask, "logits_mask"),
                                  cap(tmask, "targets_mask"),    cap(tlogps, "target_logps"), cap(lse, "lse"),
                                  cap(argmax, "argmax")};
          py::gil_scoped_release release;
          drift::oal_forward_cpu(a);
        },
        py::arg("logits"), py::arg("targets"), py::arg("logits_mask"), py::arg("targets_mask"),
        py::arg("target_logps"), py::arg("lse"), py::arg("argmax"));
  m.def("oal_forward_cuda",
        [](py::object logits, py::object targets, py::object lmask, py::object tmask, py::object tlogps, py::object lse,
           py::object argmax, std::uintptr_t stream) {
          drift::OalForwardArgs a{cap(logits, "logits"),         cap(targets, "targets"), cap(lmask, "logits_mask"),
                                  cap(tmask, "targets_mask"),    cap(tlogps, "target_logps"), cap(lse, "lse"),
                                  cap(argmax, "argmax")};
          py::gil_scoped_release release;
          drift::oal_forward_cuda(a, stream);
        },
        py::arg("logits"), py::arg("targets"), py::arg("logits_mask"), py::arg("targets_mask"),
        py::arg("target_logps"), py::arg("lse"), py::arg("argmax"), py::arg("stream"));
  m.def("oal_backward_cpu",
        [](py::object grad, py::object logits, py::object targets, py::object lse, py::object argmax, py::object out) {
          drift::OalBackwardArgs a{cap(grad, "grad_target_logps"), cap(logits, "logits"), cap(targets, "targets"),
                                   cap(lse, "lse"), cap(argmax, "argmax"), cap(out, "grad_logits")};
          py::gil_scoped_release release;
          drift::oal_backward_cpu(a);
        },
        py::arg("grad_target_logps"), py::arg("logits"), py::arg("targets"), py::arg("lse"), py::arg("argmax"),
        py::arg("grad_logits"));
  m.def("oal_backward_cuda",
        [](py::object grad, py::object logits, py::object targets, py::object lse, py::object argmax, py::object out,
           std::uintptr_t stream) {
          drift::OalBackwardArgs a{cap(grad, "grad_target_logps"), cap(logits, "logits"), cap(targets, "targets"),
                                   cap(lse, "lse"), cap(argmax, "argmax"), cap(out, "grad_logits")};
          py::gil_scoped_release release;
          drift::oal_backward_cuda(a, stream);
        },
        py::arg("grad_target_logps"), py::arg("logits"), py::arg("targets"), py::arg("lse"), py::arg("argmax"),
        py::arg("grad_logits"), py::arg("stream"));

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
