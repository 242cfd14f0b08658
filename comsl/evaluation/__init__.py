"""The bundled ComSL evaluator: beam decoding, sacreBLEU/chrF/WER per language, the paper's
group averages, baselines and reports (JSON, Markdown, plots).

Scoring, reporting and baselines need only sacreBLEU and matplotlib; decoding imports the model
lazily so scoring outputs of other systems works without torch models being loadable.
"""
