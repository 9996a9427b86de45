/* pair_style geomformer: a GeoMFormer potential exported by `geomformer-md lammps export`.

   Each rank builds the graph of its own atoms plus ghost atoms, evaluates the energy of
   its own atoms with the exported model, and gets the gradient with respect to every edge
   vector; forces on ghost atoms go back to their owners through LAMMPS's reverse
   communication (newton_pair on), so the result is the same for any number of ranks.
   Two ghost modes, chosen by the model file: "halo" (one cutoff of ghosts; the ghosts'
   features are exchanged between ranks at every layer, forward and backward, through
   pack/unpack_forward_comm and pack/unpack_reverse_comm below) and "recompute" ((layers +
   1) cutoffs of ghosts, whose lower layers each rank computes itself). See docs/lammps.md. */

#ifndef LMP_PAIR_GEOMFORMER_H
#define LMP_PAIR_GEOMFORMER_H

#include "pair.h"

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace LAMMPS_NS {

class GeoMFormerModel;    // the loaded model (pair_geomformer.cpp); keeps torch out of this header

class PairGeoMFormer : public Pair {
 public:
  PairGeoMFormer(class LAMMPS *);
  ~PairGeoMFormer() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void finish() override;

  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

  // The halo mode's exchange, called by the geomformer::halo / halo_reverse kernels while
  // the model runs (rows of `width` doubles): own rows -> rows of all graph nodes, ghost
  // rows from their owners; gradients of all nodes -> own rows, ghost rows summed into
  // their owners. Every rank makes the same calls (an empty rank with null pointers).
  void halo_forward(const double *own, int n_own, int width, double *all, int n_nodes);
  void halo_reverse(const double *grad, int n_nodes, int width, double *own, int n_own);
  static PairGeoMFormer *running;    // the instance whose model is running, for the kernels

 protected:
  void allocate();
  void build_graph();
  double ghost_cutoff_needed() const;

  std::unique_ptr<GeoMFormerModel> model;
  std::string model_file;
  std::vector<int> type_z;    // atomic number of each LAMMPS type, 0 = NULL (ignored)

  double ghost_cut_set = 0.0;    // the ghost cutoff this style set (not the user)
  bool halo = false;             // the model file's ghost mode: halo (else recompute)

  // Per-run statistics, printed by finish(): calls, and sums over calls of own atoms, graph
  // nodes, edges, atom-layers evaluated, CPU seconds in the graph and in the model, and
  // wall seconds in the halo exchanges (waiting for the other ranks included).
  double stats[8] = {0, 0, 0, 0, 0, 0, 0, 0};

  std::vector<double> halo_buf;    // [nall x halo_width] per-atom rows being exchanged
  int halo_width = 0;              // doubles per atom in the exchange (4 d_model)

  // The graph of one step, rebuilt at every call (reused buffers); see the .cpp.
  std::vector<int> node_of;                      // [nall] node of each atom, -1 = none (yet)
  std::vector<char> has_list;                    // [nall] 1 if the atom has a neighbour list
  std::unordered_map<tagint, int> node_of_tag;   // one node per atom ID
  std::vector<int> rep;                          // [n_nodes] atom whose neighbours a node uses
  std::vector<int> depth_end;                    // [hops + 1] nodes of depth <= h
  std::vector<int64_t> edge_i, edge_j;           // [E] centre and neighbour nodes
  std::vector<int> edge_atom;                    // [2 E] the (centre, neighbour) atoms
  std::vector<double> edge_vec;                  // [3 E] x_neighbour - x_centre, Å
  std::vector<long> edges_before;                // [centres + 1] first edge of each centre
};

}    // namespace LAMMPS_NS

#endif
