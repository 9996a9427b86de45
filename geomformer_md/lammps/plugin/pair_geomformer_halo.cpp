/* pair_style geomformer: the halo mode's exchange (see pair_geomformer.h, docs/lammps.md).

   A halo-mode model calls two custom operators, geomformer::halo before each block and
   geomformer::halo_reverse in its backward pass (geomformer_md/lammps/halo.py defines the
   same schema in Python for the export). The compiled model calls them through torch's
   dispatcher by name; the kernels here hand the rows to the pair style that runs the model,
   which moves them between ranks with LAMMPS's forward and reverse communication. */

#include "pair_geomformer.h"

#include "atom.h"
#include "comm.h"
#include "error.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

using namespace LAMMPS_NS;

static double wall_seconds()
{
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

PairGeoMFormer *PairGeoMFormer::running = nullptr;

static PairGeoMFormer *running_pair(const char *op)
{
  if (!PairGeoMFormer::running)
    throw std::runtime_error(std::string("geomformer::") + op + " was called outside "
                             "pair_style geomformer's compute");
  return PairGeoMFormer::running;
}

static int row_width(const std::vector<int64_t> &shape)    // numbers per row (atom)
{
  int64_t width = 1;
  for (size_t d = 1; d < shape.size(); d++) width *= shape[d];
  return (int) width;
}

static at::Tensor halo_op(const at::Tensor &own, const at::Tensor &like)
{
  PairGeoMFormer *pair = running_pair("halo");
  const at::Tensor src = own.to(at::kDouble).contiguous();
  const int64_t n_own = own.size(0), n_nodes = like.size(0);
  std::vector<int64_t> shape = own.sizes().vec();
  shape[0] = n_nodes;
  at::Tensor all = at::empty(shape, src.options());
  const int width = row_width(shape);
  pair->halo_forward(src.data_ptr<double>(), (int) n_own, width, all.data_ptr<double>(),
                     (int) n_nodes);
  return all.to(own.scalar_type());
}

static at::Tensor halo_reverse_op(const at::Tensor &grad, const at::Tensor &own)
{
  PairGeoMFormer *pair = running_pair("halo_reverse");
  const at::Tensor src = grad.to(at::kDouble).contiguous();
  const int64_t n_nodes = grad.size(0), n_own = own.size(0);
  std::vector<int64_t> shape = grad.sizes().vec();
  shape[0] = n_own;
  at::Tensor out = at::empty(shape, src.options());
  const int width = row_width(shape);
  pair->halo_reverse(src.data_ptr<double>(), (int) n_nodes, width, out.data_ptr<double>(),
                     (int) n_own);
  return out.to(grad.scalar_type());
}

// Registered when LAMMPS loads the plugin. Not with TORCH_LIBRARY: in a Python process
// that imported geomformer_md.lammps.halo (which defines the schema) before loading the
// plugin through the lammps module, a second definition would abort the load; here the
// schema is defined only if it is missing, and the C++ kernels serve CPU tensors either way.
namespace {
struct HaloOperators {
  std::unique_ptr<torch::Library> def, impl;
  HaloOperators()
  {
    if (!c10::Dispatcher::singleton().findSchema({"geomformer::halo", ""})) {
      def = std::make_unique<torch::Library>(torch::Library::FRAGMENT, "geomformer",
                                             std::nullopt, __FILE__, __LINE__);
      def->def("halo(Tensor own, Tensor like) -> Tensor");
      def->def("halo_reverse(Tensor grad, Tensor own) -> Tensor");
    }
    impl = std::make_unique<torch::Library>(torch::Library::IMPL, "geomformer",
                                            c10::DispatchKey::CPU, __FILE__, __LINE__);
    impl->impl("halo", halo_op);
    impl->impl("halo_reverse", halo_reverse_op);
  }
} halo_operators;
}    // namespace

/* The halo exchange. Rows of all local and ghost atoms live in halo_buf; LAMMPS's
   communication moves them between ranks in its swaps (a ghost of a ghost passes through
   the rank in between, which is why a rank with no atom of its own still takes part).
   Forward: every ghost atom's row becomes its owner's. Reverse: every ghost atom's row is
   added to its owner's, in the reverse order of the swaps. One rank has no remote atoms
   (every ghost is an image of an own atom, folded into its node): no communication. */

void PairGeoMFormer::halo_forward(const double *own, int n_own, int width, double *all,
                                  int n_nodes)
{
  const double t0 = wall_seconds();
  if (n_own != (n_own ? depth_end[0] : 0) || n_nodes != (n_own ? (int) rep.size() : 0) ||
      width != comm_forward)
    error->one(FLERR, "pair_style geomformer: the model exchanged {} own and {} node rows of {} "
               "numbers; the graph has {} and {} and the model file says {}", n_own, n_nodes,
               width, depth_end[0], rep.size(), comm_forward);
  const size_t w = width;
  if (n_own) std::memcpy(all, own, n_own * w * sizeof(double));
  if (comm->nprocs > 1) {
    halo_buf.resize((atom->nlocal + atom->nghost) * w);
    for (int k = 0; k < n_own; k++)
      std::memcpy(&halo_buf[rep[k] * w], own + k * w, w * sizeof(double));
    comm->forward_comm(this);
    for (int k = n_own; k < n_nodes; k++)
      std::memcpy(all + k * w, &halo_buf[rep[k] * w], w * sizeof(double));
  }
  stats[7] += wall_seconds() - t0;
}

void PairGeoMFormer::halo_reverse(const double *grad, int n_nodes, int width, double *own,
                                  int n_own)
{
  const double t0 = wall_seconds();
  if (n_own != (n_own ? depth_end[0] : 0) || n_nodes != (n_own ? (int) rep.size() : 0) ||
      width != comm_reverse)
    error->one(FLERR, "pair_style geomformer: the model's reverse exchange got {} node and {} own "
               "rows of {} numbers; the graph has {} and {} and the model file says {}", n_nodes,
               n_own, width, rep.size(), depth_end[0], comm_reverse);
  const size_t w = width;
  if (n_own) std::memcpy(own, grad, n_own * w * sizeof(double));
  if (comm->nprocs > 1) {
    halo_buf.assign((atom->nlocal + atom->nghost) * w, 0.0);
    for (int k = n_own; k < n_nodes; k++)
      std::memcpy(&halo_buf[rep[k] * w], grad + k * w, w * sizeof(double));
    comm->reverse_comm(this);
    for (int k = 0; k < n_own; k++) {
      const double *received = &halo_buf[rep[k] * w];
      double *o = own + k * w;
      for (size_t c = 0; c < w; c++) o[c] += received[c];
    }
  }
  stats[7] += wall_seconds() - t0;
}

int PairGeoMFormer::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  const size_t w = comm_forward;
  for (int i = 0; i < n; i++) std::memcpy(buf + i * w, &halo_buf[list[i] * w], w * sizeof(double));
  return n * w;
}

void PairGeoMFormer::unpack_forward_comm(int n, int first, double *buf)
{
  std::memcpy(&halo_buf[first * (size_t) comm_forward], buf, n * comm_forward * sizeof(double));
}

int PairGeoMFormer::pack_reverse_comm(int n, int first, double *buf)
{
  std::memcpy(buf, &halo_buf[first * (size_t) comm_reverse], n * comm_reverse * sizeof(double));
  return n * comm_reverse;
}

void PairGeoMFormer::unpack_reverse_comm(int n, int *list, double *buf)
{
  const size_t w = comm_reverse;
  for (int i = 0; i < n; i++) {
    double *row = &halo_buf[list[i] * w];
    const double *in = buf + i * w;
    for (size_t c = 0; c < w; c++) row[c] += in[c];
  }
}
