import json, sys
a = json.load(open("runs/distill-emt-cuagau/progress.json"))
b = json.load(open("runs/distill-emt-cuagau-random/progress.json"))
n = min(len(a), len(b))
cats = ["bulk", "alloy", "surface", "cluster", "heldout:elements=Ag-Au", "all"]
print("| iteration | frames | " + " | ".join(f"F {c}" for c in cats) + " | E all | Spearman | caught | flagged |")
print("|---|---:|" + "---:|" * (len(cats) + 4))
for r in a:
    print(f"| {r['iteration']} uncertainty | {r['frames_total']} | " + " | ".join(f"{r[f'F_{c}']:.1f}" for c in cats)
          + f" | {r['E_all']:.1f} | {r['spearman']:.2f} | {r['caught']:.2f} | {r['flagged_frames']}/{57} |")
for r in b:
    if r["iteration"] == 0: continue
    print(f"| {r['iteration']} random | {r['frames_total']} | " + " | ".join(f"{r[f'F_{c}']:.1f}" for c in cats)
          + f" | {r['E_all']:.1f} | {r['spearman']:.2f} | {r['caught']:.2f} | {r['flagged_frames']}/{57} |")
