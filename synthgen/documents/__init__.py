"""The user's own files as text: readers per format (`readers`), extraction in worker processes (`pool`), chunk
spans over the extracted text with their page and section (`spans`), and the two stages over them (`stages`:
extract_text, chunk). The stages live here, not in synthgen.stages, because they build on the WRAP chunker in
synthgen.recipes, which itself builds on synthgen.stages."""
