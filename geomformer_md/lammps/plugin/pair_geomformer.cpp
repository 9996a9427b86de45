/* pair_style geomformer (see pair_geomformer.h and docs/lammps.md).

   The graph of a rank. Nodes are atoms, one node per atom ID (tag): a ghost atom that is
   a periodic image of an atom this rank owns, or a second image of the same remote atom,
   is the same node, because it has the same environment and hence the same features.
   On one rank every ghost is such an image, so the graph is exactly the one the ASE
   calculator builds (no redundant work). Nodes are numbered by their hop distance from
   the rank's own atoms (breadth-first over edges shorter than r_c): depth 0 are the own
   atoms. Each edge keeps the two LAMMPS atoms it joins, so the gradient with respect to
   its vector becomes forces on exactly those atoms (ghosts included) and the virial.

   Halo mode: the graph is the own atoms, their edges and the atoms at depth 1 (ghost
   nodes). Every layer is computed for the own atoms; before each block the model calls
   geomformer::halo, whose kernel (pair_geomformer_halo.cpp) puts the own rows in halo_buf, runs LAMMPS's
   forward communication (which fills every ghost atom's row from its owner) and reads
   the ghost nodes' rows; its backward, geomformer::halo_reverse, puts the ghost nodes'
   gradient rows in halo_buf and runs the reverse communication, which sums them into the
   owners' rows. Recompute mode: depth up to L + 1 (L = number of layers); the model
   computes its initial features for depth <= L and layer k for depth <= L - k only, and
   depth L + 1 enters only as the far end of edges. */

#include "pair_geomformer.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/headeronly/version.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <sstream>

using namespace LAMMPS_NS;

static double cpu_seconds()    // this process's CPU time: the work, whatever the machine's load
{
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

namespace LAMMPS_NS {

// The exported model and the metadata `geomformer-md lammps export` stores with it. The
// metadata is read and checked before the package's compiled code is loaded: code compiled
// for another torch version may not load, or crash, in this plugin's libtorch.
class GeoMFormerModel {
 public:
  explicit GeoMFormerModel(const std::string &path)
  {
    meta = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
    if (meta.count("geomformer_lammps_format") == 0)
      throw std::runtime_error("it has no geomformer-md metadata (not written by "
                               "'geomformer-md lammps export')");
    // Format 1: recompute mode, no ghost_mode key. 2: ghost_mode "halo" or "recompute".
    int format = std::stoi(meta.at("geomformer_lammps_format"));
    if (format != 1 && format != 2)
      throw std::runtime_error("its format version is " + std::to_string(format) +
                               "; this plugin reads versions 1 and 2 (rebuild the plugin with "
                               "the geomformer-md that exported it)");
    const std::string mode = format == 1 ? "recompute"
                             : meta.count("ghost_mode") ? meta.at("ghost_mode") : "";
    if (mode != "halo" && mode != "recompute")
      throw std::runtime_error("its ghost mode '" + mode + "' is unknown to this plugin");
    halo = mode == "halo";
    halo_width = halo && meta.count("halo_width") ? std::stoi(meta.at("halo_width")) : 0;
    if (halo && halo_width <= 0)
      throw std::runtime_error("its metadata has no valid halo_width (the halo mode needs it)");
    std::string exported_with = meta.at("torch_version");
    exported_with = exported_with.substr(0, exported_with.find('+'));
    if (exported_with != TORCH_VERSION)
      throw std::runtime_error("it was exported with torch " + exported_with + " and this "
                               "plugin uses torch " TORCH_VERSION "; export it again in this "
                               "environment");
    cutoff = std::stod(meta.at("cutoff"));
    n_layers = std::stoi(meta.at("n_layers"));
    std::istringstream symbols(meta.at("elements")), numbers(meta.at("atomic_numbers"));
    std::string s;
    int z;
    while (symbols >> s) elements.push_back(s);
    while (numbers >> z) atomic_numbers.push_back(z);
    if (elements.empty() || elements.size() != atomic_numbers.size())
      throw std::runtime_error("its element list is empty or inconsistent");
    dtype = meta.at("dtype") == "float64" ? at::kDouble : at::kFloat;
    loader = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
  }

  std::vector<at::Tensor> run(const std::vector<at::Tensor> &inputs) { return loader->run(inputs); }

  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader;
  std::unordered_map<std::string, std::string> meta;
  double cutoff;
  int n_layers;
  bool halo;          // ghost mode: halo (features exchanged per layer), else recompute
  int halo_width;     // doubles per atom and exchange
  std::vector<std::string> elements;
  std::vector<int> atomic_numbers;
  at::ScalarType dtype;
};

}    // namespace LAMMPS_NS

/* ---------------------------------------------------------------------- */

PairGeoMFormer::PairGeoMFormer(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  ghostneigh = 1;                      // neighbour lists of ghosts: the graph reaches past r_c
  no_virial_fdotr_compute = 1;         // the virial comes from the edge gradients
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairGeoMFormer::~PairGeoMFormer()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);    // map and elements: Pair::~Pair frees them
  }
}

void PairGeoMFormer::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  map = new int[n];    // type -> element, filled by map_element2type
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

void PairGeoMFormer::settings(int narg, char **arg)
{
  if (narg != 0)
    error->all(FLERR, "pair_style geomformer takes no arguments, got '{}'; the model file and "
               "elements go in 'pair_coeff * * MODEL.pt2 El1 El2 ...'", arg[0]);
}

/* pair_coeff * * FILE El1 El2 ... (one element per atom type, NULL = ignored) */

void PairGeoMFormer::coeff(int narg, char **arg)
{
  const int ntypes = atom->ntypes;
  if (narg < 3 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for geomformer must be 'pair_coeff * * MODEL.pt2 El1 El2 ...' "
               "(one element per atom type, NULL for types the model ignores)");
  if (narg - 3 != ntypes)
    error->all(FLERR, "pair_coeff geomformer: {} element name(s) after the model file for {} "
               "atom type(s); give one per type, in type order (NULL for types the model "
               "ignores)", narg - 3, ntypes);
  if (!allocated) allocate();

  model_file = arg[2];
  if (!platform::file_is_readable(model_file))
    error->all(FLERR, "pair_coeff geomformer: model file '{}' not found or not readable; write "
               "one with 'geomformer-md lammps export MODEL -o {}'", model_file, model_file);
  try {
    model = std::make_unique<GeoMFormerModel>(model_file);
  } catch (std::exception &e) {
    std::string why = e.what();
    why = why.substr(0, why.find('\n'));
    error->all(FLERR, "pair_coeff geomformer: cannot load '{}' as a geomformer-md LAMMPS model: "
               "{}", model_file, why);
  }

  std::string known;
  for (auto &el : model->elements) known += " " + el;
  type_z.assign(ntypes + 1, 0);
  for (int t = 1; t <= ntypes; t++) {
    std::string el = arg[2 + t];
    if (el == "NULL") continue;
    int k = 0;
    while (k < (int) model->elements.size() && model->elements[k] != el) k++;
    if (k == (int) model->elements.size())
      error->all(FLERR, "pair_coeff geomformer: element '{}' (atom type {}) is not in the model "
                 "'{}'; it knows{}", el, t, model_file, known);
    type_z[t] = model->atomic_numbers[k];
  }
  map_element2type(narg - 3, arg + 3);    // setflag for the mapped type pairs
}

double PairGeoMFormer::ghost_cutoff_needed() const
{
  return (halo ? 1 : model->n_layers + 1) * model->cutoff + neighbor->skin;
}

void PairGeoMFormer::init_style()
{
  if (!model) error->all(FLERR, "pair_style geomformer needs a pair_coeff line first");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style geomformer requires newton pair on (forces on ghost atoms are "
               "summed onto their owners by reverse communication)");
  if (atom->tag_enable == 0)
    error->all(FLERR, "pair_style geomformer requires atom IDs (atom_modify id yes)");
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style geomformer requires 'units metal' (eV, Å, ps); got units {}",
               update->unit_style);
  if (comm->mode != Comm::SINGLE)
    error->all(FLERR, "pair_style geomformer supports comm_modify mode single only");

  halo = model->halo;
  const double need = ghost_cutoff_needed();
  if (halo) {
    // Halo mode: ghosts within r_c + skin are all a rank needs (their features come from
    // their owners), and LAMMPS's ghost cutoff is never below the neighbour cutoff, r_c +
    // skin: nothing to set or check. A cutoff this style raised for a recompute-mode
    // model earlier in the input goes back.
    if (ghost_cut_set > 0.0 && comm->cutghostuser == ghost_cut_set) comm->cutghostuser = 0.0;
    ghost_cut_set = 0.0;
    ghostneigh = 0;
    comm_forward = comm_reverse = model->halo_width;
    // Inside pair_style hybrid, LAMMPS sizes its communication buffers from the hybrid
    // style's comm_forward, which took the maximum over the sub-styles when they were
    // created (pair_style line), before this one knew its model: raise it here.
    if (force->pair && force->pair != this) {
      force->pair->comm_forward = std::max(force->pair->comm_forward, comm_forward);
      force->pair->comm_reverse = std::max(force->pair->comm_reverse, comm_reverse);
    }
    if (comm->me == 0)
      utils::logmesg(lmp, "pair_style geomformer: halo mode (ghost features exchanged at every "
                     "layer): ghost cutoff r_c {:.4g} Å + skin {:.4g} Å = {:.4g} Å\n",
                     model->cutoff, neighbor->skin, need);
  } else {
    // The receptive field: the energy of an atom depends on the last layer's features of
    // its neighbours, ..., on the initial features of atoms L cutoffs away, and those are
    // sums over THEIR neighbours: L + 1 cutoffs, plus the skin atoms may move between
    // neighbour-list builds. A ghost cutoff the user set below that is an error (it would
    // silently give wrong forces near subdomain boundaries); none set, or our own, is raised.
    ghostneigh = 1;
    comm_forward = comm_reverse = 0;
    if (comm->cutghostuser < need) {
      if (comm->cutghostuser > 0.0 && comm->cutghostuser != ghost_cut_set)
        error->all(FLERR, "pair_style geomformer: ghost cutoff {:.4g} Å (comm_modify cutoff) is "
                   "too small for this model (recompute mode): it needs (n_layers {} + 1) x r_c "
                   "{:.4g} Å + neighbor skin {:.4g} Å = {:.4g} Å, because each of the {} layers "
                   "looks one cutoff further and the initial features one more. Remove the "
                   "comm_modify cutoff (the pair style sets it), make it at least {:.4g}, or "
                   "export the model in halo mode (ghost cutoff r_c + skin)", comm->cutghostuser,
                   model->n_layers, model->cutoff, neighbor->skin, need, model->n_layers, need);
      comm->cutghostuser = ghost_cut_set = need;
      if (comm->me == 0)
        utils::logmesg(lmp, "pair_style geomformer: recompute mode: ghost cutoff set to {:.4g} Å "
                       "= (n_layers {} + 1) x r_c {:.4g} Å + skin {:.4g} Å\n", need,
                       model->n_layers, model->cutoff, neighbor->skin);
    }
  }
  at::set_num_threads(comm->nthreads);
  for (double &x : stats) x = 0.0;
  neighbor->add_request(this, halo ? NeighConst::REQ_FULL
                                   : NeighConst::REQ_FULL | NeighConst::REQ_GHOST);
}

double PairGeoMFormer::init_one(int i, int j)
{
  cutghost[i][j] = cutghost[j][i] = model->cutoff;
  return model->cutoff;
}

/* ---------------------------------------------------------------------- */

void PairGeoMFormer::build_graph()
{
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  const int hops = halo ? 1 : model->n_layers + 1;    // depths whose edges are gathered
  const double rc2 = model->cutoff * model->cutoff;
  double **x = atom->x;
  int *type = atom->type;
  tagint *tag = atom->tag;
  int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;

  node_of.assign(nall, -1);
  has_list.assign(nall, 0);
  for (int ii = 0; ii < list->inum + list->gnum; ii++) has_list[list->ilist[ii]] = 1;
  node_of_tag.clear();
  rep.clear();
  depth_end.clear();
  edge_i.clear();
  edge_j.clear();
  edge_atom.clear();
  edge_vec.clear();
  edges_before.assign(1, 0);

  auto node = [&](int a) {
    if (node_of[a] < 0) {
      auto found = node_of_tag.find(tag[a]);
      if (found != node_of_tag.end()) {
        node_of[a] = found->second;
      } else {
        node_of[a] = (int) rep.size();
        node_of_tag.emplace(tag[a], node_of[a]);
        rep.push_back(a);
      }
    }
    return node_of[a];
  };

  for (int a = 0; a < nlocal; a++)
    if (type_z[type[a]]) node(a);
  depth_end.push_back((int) rep.size());

  for (int h = 0; h < hops; h++) {    // the edges of depth-h nodes; new nodes are depth h + 1
    const int begin = h ? depth_end[h - 1] : 0, end = depth_end[h];
    for (int k = begin; k < end; k++) {
      const int a = rep[k];
      if (!has_list[a])
        error->one(FLERR, "pair_style geomformer: atom {} has no neighbour list (is the pair "
                   "style used inside pair_style hybrid with a skip list?)", tag[a]);
      const int *nbr = firstneigh[a];
      for (int jj = 0; jj < numneigh[a]; jj++) {
        const int b = nbr[jj] & NEIGHMASK;
        if (!type_z[type[b]]) continue;
        const double dx = x[b][0] - x[a][0], dy = x[b][1] - x[a][1], dz = x[b][2] - x[a][2];
        if (dx * dx + dy * dy + dz * dz >= rc2) continue;
        edge_i.push_back(k);
        edge_j.push_back(node(b));
        edge_atom.push_back(a);
        edge_atom.push_back(b);
        edge_vec.push_back(dx);
        edge_vec.push_back(dy);
        edge_vec.push_back(dz);
      }
      edges_before.push_back((long) edge_i.size());
    }
    depth_end.push_back((int) rep.size());
  }
}

void PairGeoMFormer::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  const double t0 = cpu_seconds();
  build_graph();
  const int n_own = depth_end[0];
  const int L = model->n_layers;
  stats[0] += 1;
  stats[1] += n_own;
  stats[2] += rep.size();
  stats[3] += edge_i.size();
  for (int k = 0; k <= L; k++) stats[4] += halo ? n_own : depth_end[L - k];
  const double t1 = cpu_seconds();
  stats[5] += t1 - t0;
  if (n_own == 0) {    // an empty subdomain, or only NULL-type atoms: no energy here, but
    if (halo && comm->nprocs > 1) {    // the other ranks' exchanges pass through this one
      for (int k = 0; k < L; k++) halo_forward(nullptr, 0, model->halo_width, nullptr, 0);
      for (int k = 0; k < L; k++) halo_reverse(nullptr, 0, model->halo_width, nullptr, 0);
    }
    return;
  }

  const long n_edges = (long) edge_i.size();
  const int n_nodes = (int) rep.size();
  int *type = atom->type;

  auto opts_long = at::TensorOptions().dtype(at::kLong);
  at::Tensor numbers = at::empty({n_nodes}, opts_long);
  auto *z = numbers.data_ptr<int64_t>();
  for (int k = 0; k < n_nodes; k++) z[k] = type_z[type[rep[k]]];
  at::Tensor edge_index = at::empty({2, n_edges}, opts_long);
  if (n_edges) {
    std::memcpy(edge_index.data_ptr<int64_t>(), edge_i.data(), n_edges * sizeof(int64_t));
    std::memcpy(edge_index.data_ptr<int64_t>() + n_edges, edge_j.data(), n_edges * sizeof(int64_t));
  }
  at::Tensor vec = at::from_blob(edge_vec.data(), {n_edges, 3}, at::kDouble).to(model->dtype);
  // Sizes as the shapes of empty tensors (the exported graph's dynamic dimensions). Halo:
  // the own atoms. Recompute: the layer sizes, entry 0 the initial features, entry k layer
  // k, each (atoms, edges) in prefix form.
  std::vector<at::Tensor> inputs{numbers, edge_index, vec};
  auto opts_u8 = at::TensorOptions().dtype(at::kByte);
  if (halo) {
    inputs.push_back(at::empty({n_own, 0}, opts_u8));
  } else {
    for (int k = 0; k <= L; k++) {
      const int atoms = depth_end[L - k];
      inputs.push_back(at::empty({atoms, (long) edges_before[atoms], 0}, opts_u8));
    }
  }

  std::vector<at::Tensor> out;
  try {
    running = this;
    out = model->run(inputs);
    running = nullptr;
  } catch (std::exception &e) {
    running = nullptr;
    std::string why = e.what();
    error->one(FLERR, "pair_style geomformer: the model failed on rank {} ({} own atoms, {} "
               "nodes, {} edges): {}", comm->me, n_own, n_nodes, n_edges,
               why.substr(0, why.find('\n')));
  }
  at::Tensor energies = out.at(0).to(at::kDouble).contiguous();
  at::Tensor grad = out.at(1).to(at::kDouble).contiguous();
  if (energies.numel() != n_own || grad.numel() != 3 * n_edges)
    error->one(FLERR, "pair_style geomformer: the model returned {} energies and {} gradient "
               "entries for {} atoms and {} edges", energies.numel(), grad.numel(), n_own,
               n_edges);
  stats[6] += cpu_seconds() - t1;    // the exchanges' CPU time included
  const double *e = energies.data_ptr<double>();
  const double *g = grad.data_ptr<double>();

  if (eflag_either) {
    for (int k = 0; k < n_own; k++) {
      if (eflag_global) eng_vdwl += e[k];
      if (eflag_atom) eatom[rep[k]] += e[k];
    }
  }

  // E depends on r_b - r_a of every edge (a, b): dE/dr_b = g, dE/dr_a = -g, F = -dE/dr.
  // Virial W = sum_atoms r (x) F = -sum_edges (r_b - r_a) (x) g, symmetrised (ASE's stress
  // is the derivative with respect to a symmetric strain).
  double **f = atom->f;
  for (long k = 0; k < n_edges; k++) {
    const int a = edge_atom[2 * k], b = edge_atom[2 * k + 1];
    const double *gk = g + 3 * k, *d = edge_vec.data() + 3 * k;
    for (int c = 0; c < 3; c++) {
      f[a][c] += gk[c];
      f[b][c] -= gk[c];
    }
    if (vflag_either) {
      const double v[6] = {-d[0] * gk[0], -d[1] * gk[1], -d[2] * gk[2],
                           -0.5 * (d[0] * gk[1] + d[1] * gk[0]),
                           -0.5 * (d[0] * gk[2] + d[2] * gk[0]),
                           -0.5 * (d[1] * gk[2] + d[2] * gk[1])};
      for (int c = 0; c < 6; c++) {
        if (vflag_global) virial[c] += v[c];
        if (vflag_atom) {
          vatom[a][c] += 0.5 * v[c];
          vatom[b][c] += 0.5 * v[c];
        }
      }
    }
  }
}


/* Per-rank averages over the run's calls: the ghost overhead (graph nodes and atom-layers
   evaluated per own atom; 1 would be no redundant work) and where the time went. */

void PairGeoMFormer::finish()
{
  double sum[8], max[8];
  MPI_Allreduce(stats, sum, 8, MPI_DOUBLE, MPI_SUM, world);
  MPI_Allreduce(stats, max, 8, MPI_DOUBLE, MPI_MAX, world);
  if (comm->me != 0 || max[0] == 0) return;
  const double calls = max[0], own = sum[1] / calls, hops = model->n_layers + 1;
  utils::logmesg(lmp, "pair_style geomformer, per rank and call ({} ranks, {} calls, {} mode): own "
                 "atoms {:.0f}, graph nodes {:.0f} ({:.2f} per own atom), edges {:.0f}, "
                 "atom-layers evaluated / (own atoms x (layers + 1)) {:.2f}; CPU s per call (max "
                 "over ranks): graph {:.4g}, model {:.4g}; wall s per call in halo exchanges (max "
                 "over ranks) {:.4g}\n", comm->nprocs, (long) calls, halo ? "halo" : "recompute",
                 own / comm->nprocs, sum[2] / calls / comm->nprocs, own > 0 ? sum[2] / sum[1] : 0.0,
                 sum[3] / calls / comm->nprocs, own > 0 ? sum[4] / (hops * sum[1]) : 0.0,
                 max[5] / calls, max[6] / calls, max[7] / calls);
}
