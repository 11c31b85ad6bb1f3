# The short fuzz run in ctest (label `fuzz`): one test per libFuzzer target, 15 s each from
# fuzz/corpus/<target>/, failing on any finding. The targets are a separate clang build
# (fuzz/CMakeLists.txt) that scripts/setup.sh makes in <build>/fuzz where clang++-14 exists;
# where they are missing the tests report SKIPPED (exit 77), never passed.
set(RHYTHM_FUZZ_BUILD_DIR ${CMAKE_BINARY_DIR}/fuzz CACHE PATH
    "Where scripts/setup.sh builds the libFuzzer targets (fuzz/CMakeLists.txt)")
set(RHYTHM_FUZZ_SECONDS 15 CACHE STRING "Seconds each fuzz_* ctest runs its target")
foreach(t hf_config safetensors tokenizer_json rollout_validation config_yaml)
  add_test(NAME fuzz_${t}
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/run_fuzz_test.sh ${RHYTHM_FUZZ_BUILD_DIR} ${t}
                   ${RHYTHM_FUZZ_SECONDS})
  set_tests_properties(fuzz_${t} PROPERTIES LABELS fuzz SKIP_RETURN_CODE 77 TIMEOUT 180)
endforeach()
