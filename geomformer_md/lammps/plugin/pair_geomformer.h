/* pair_style geomformer: a GeoMFormer potential exported by `geomformer-md lammps export`.

   Each rank builds the graph of its own atoms plus the ghost atoms within the model's
   receptive field, evaluates the energy of its own atoms with the exported model, and
   gets the gradient with respect to every edge vector; forces on ghost atoms go back to
   their owners through LAMMPS's reverse communication (newton_pair on), so the result
   is the same for any number of ranks. See docs/lammps.md. */

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

 protected:
  void allocate();
  void build_graph();
  double ghost_cutoff_needed() const;

  std::unique_ptr<GeoMFormerModel> model;
  std::string model_file;
  std::vector<int> type_z;    // atomic number of each LAMMPS type, 0 = NULL (ignored)

  double ghost_cut_set = 0.0;    // the ghost cutoff this style set (not the user)

  // Per-run statistics, printed by finish(): calls, and sums over calls of own atoms, graph
  // nodes, edges, atom-layers evaluated, and CPU seconds in the graph and in the model.
  double stats[7] = {0, 0, 0, 0, 0, 0, 0};

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
