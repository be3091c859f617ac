// drift._C: converts Python arguments (DLPack capsules, ints) and forwards to the drivers.
// No algorithm lives here. Views are parsed with the GIL held; the work runs without it.
// Each op has one entry, which runs on the device its tensors live on (`stream`: the CUDA
// stream handle, ignored on CPU).
#include <pybind11/pybind11.h>

#include <array>
#include <utility>

#include "drivers.hpp"
#include "dlpack_capsule.hpp"

namespace py = pybind11;
using drift::TensorView;

namespace {

TensorView cap(const py::object& o, const char* name) { return drift::view_from_capsule(o.ptr(), name); }

template <size_t> using Capsule = py::object;

// Defines `name(<names...>, stream=0)`: the capsules become the views of an Args (its members
// in order), run by drift::run on their device.
template <typename Args, size_t N, size_t... I>
void def_vocab_op(py::module_& m, const char* name, std::array<const char*, N> names, std::index_sequence<I...>) {
  m.def(
      name,
      [names](Capsule<I>... views, std::uintptr_t stream) {
        Args args{cap(views, names[I])...};
        py::gil_scoped_release release;
        drift::run(args, stream);
      },
      py::arg(names[I])..., py::arg("stream") = 0);
}

template <typename Args, size_t N> void def_vocab_op(py::module_& m, const char* name, const char* const (&names)[N]) {
  std::array<const char*, N> list{};
  for (size_t i = 0; i < N; ++i) list[i] = names[i];
  def_vocab_op<Args>(m, name, list, std::make_index_sequence<N>{});
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "drift native core (no libtorch): batched LCS masks and fused vocabulary losses";

  m.def(
      "lcs_mask",
      [](py::object y, py::object yp, py::object yl, py::object ypl, py::object my, py::object myp, py::object len,
         py::object scratch, std::uintptr_t stream) {
        drift::LcsArgs args{cap(y, "y"),           cap(yp, "y_prime"), cap(yl, "y_lengths"),   cap(ypl, "y_prime_lengths"),
                            cap(my, "mask_y"),     cap(myp, "mask_y_prime"), cap(len, "lcs_length")};
        if (args.y.device != drift::DeviceKind::kCUDA) {
          py::gil_scoped_release release;
          return drift::lcs_cpu(args);
        }
        const TensorView s = cap(scratch, "scratch");
        py::gil_scoped_release release;
        drift::lcs_cuda(args, s, stream);
      },
      py::arg("y"), py::arg("y_prime"), py::arg("y_lengths"), py::arg("y_prime_lengths"), py::arg("mask_y"),
      py::arg("mask_y_prime"), py::arg("lcs_length"), py::arg("scratch") = py::none(), py::arg("stream") = 0);
  m.def("lcs_cuda_max_length", &drift::lcs_cuda_max_length);

  // Fused vocabulary losses (drivers.hpp documents each view).
  def_vocab_op<drift::TokenLogpsForwardArgs>(m, "token_logps_forward", {"logits", "labels", "mask", "logps", "lse"});
  def_vocab_op<drift::TokenLogpsBackwardArgs>(
      m, "token_logps_backward", {"grad_logps", "logits", "labels", "mask", "lse", "grad_logits"});
  def_vocab_op<drift::OalForwardArgs>(
      m, "oal_forward", {"logits", "targets", "logits_mask", "targets_mask", "target_logps", "lse", "argmax"});
  def_vocab_op<drift::OalBackwardArgs>(
      m, "oal_backward", {"grad_target_logps", "logits", "targets", "lse", "argmax", "grad_logits"});

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
