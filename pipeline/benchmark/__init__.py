"""``vtl benchmark``'s machinery, one concept per module: the sources file (:mod:`.sources`), the
grid of cells and their staleness (:mod:`.grid`), transferability scores (:mod:`.scores`), running
cells (:mod:`.runner`) and collecting their results (:mod:`.results`). The stage
(:mod:`pipeline.stages.benchmark`) puts them in order; the report is :mod:`pipeline.report.benchmark`.
"""
