/* The loader: registers pair_style geomformer with LAMMPS's `plugin load`.
   The plugin ABI (LAMMPS manual, "Writing plugins"): LAMMPS calls lammpsplugin_init with
   itself, the dlopen handle and a registration function taking this struct. The wheel
   ships no lammpsplugin.h, so the struct is declared here; it has been stable since the
   PLUGIN package appeared (2021). */

#include "pair_geomformer.h"

using namespace LAMMPS_NS;

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
void lammpsplugin_init(void *lmp, void *handle, void *regfunc);
}

static Pair *geomformer_creator(LAMMPS *lmp)
{
  return new PairGeoMFormer(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  plugin.version = GEOMFORMER_LAMMPS_VERSION;    // set by CMakeLists.txt from the wheel
  plugin.style = "pair";
  plugin.name = "geomformer";
  plugin.info = "GeoMFormer machine-learning potential (geomformer-md)";
  plugin.author = "geomformer-md";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &geomformer_creator;
  plugin.handle = handle;
  ((lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
