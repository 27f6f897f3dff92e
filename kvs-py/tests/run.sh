#!/usr/bin/env bash
# Python tests: filled in by the Python package work (issue 5).
echo "Python tests: none yet"
