"""The course: assignments made from this very source (docs/handout.md).

    python -m course.exercise list       # the exercise sets and their functions

| module | what it does |
|---|---|
| `exercise` | student copies, their tests, the mutants they must catch, the golden run, grading |
"""
