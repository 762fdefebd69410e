# rnnc_add_model: a model compiled by `rnnc build` at build time, as a
# static library to link (see docs/aot.md, "CMake").
#
#   rnnc_add_model(<name> GRAPH <graph.nn> CKPT <checkpoint.safetensors>
#                  PREFIX <P> [TARGET_TRIPLE <triple>] [CPU <cpu>]
#                  [QUANTIZE int8])
#
# makes the library target <name>: the object of
#   rnnc build GRAPH CKPT -o <dir>/<name>.o --prefix P [--target ..] [--cpu ..]
# with <dir> (where <name>.h is) as its include directory, so that
#   target_link_libraries(app PRIVATE <name>)
# lets app include "<name>.h" and call P_forward and P_predict. The object is
# rebuilt when the graph, the checkpoint or rnnc changes. Relative paths
# are relative to the current source directory. TARGET_TRIPLE and CPU are
# rnnc build's --target and --cpu (default: the host and its CPU; a
# library for another machine needs a project configured for it).
# QUANTIZE int8 is --quantize int8: the products' matrices as int8 rows
# with a scale each, an object about 4x smaller.
#
# Uses the executable target rnnc::rnnc (the package's, or rnnc's own
# build tree's alias).
function(rnnc_add_model name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "GRAPH;CKPT;PREFIX;TARGET_TRIPLE;CPU;QUANTIZE" "")
  set(where "rnnc_add_model(${name})")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "${where}: unexpected arguments: ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  foreach(arg GRAPH CKPT PREFIX)
    if(NOT ARG_${arg})
      message(FATAL_ERROR "${where}: ${arg} is required")
    endif()
  endforeach()
  if((DEFINED ARG_QUANTIZE OR "QUANTIZE" IN_LIST ARG_KEYWORDS_MISSING_VALUES)
     AND NOT ARG_QUANTIZE STREQUAL "int8")
    message(FATAL_ERROR "${where}: QUANTIZE wants int8, not '${ARG_QUANTIZE}'")
  endif()
  if(NOT ARG_PREFIX MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR "${where}: PREFIX '${ARG_PREFIX}' is not a C identifier")
  endif()
  if(NOT TARGET rnnc::rnnc)
    message(FATAL_ERROR "${where}: no rnnc::rnnc executable: use find_package(rnnc)")
  endif()

  get_filename_component(graph "${ARG_GRAPH}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  get_filename_component(ckpt "${ARG_CKPT}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  set(dir "${CMAKE_CURRENT_BINARY_DIR}/rnnc_${name}")
  set(obj "${dir}/${name}.o")
  set(options --prefix ${ARG_PREFIX})
  if(ARG_TARGET_TRIPLE)
    list(APPEND options --target ${ARG_TARGET_TRIPLE})
  endif()
  if(ARG_CPU)
    list(APPEND options --cpu ${ARG_CPU})
  endif()
  if(ARG_QUANTIZE)
    list(APPEND options --quantize ${ARG_QUANTIZE})
  endif()
  file(MAKE_DIRECTORY "${dir}")
  add_custom_command(
    OUTPUT "${obj}" "${dir}/${name}.h"
    COMMAND rnnc::rnnc build "${graph}" "${ckpt}" -o "${obj}" ${options}
    DEPENDS "${graph}" "${ckpt}" "$<TARGET_FILE:rnnc::rnnc>"
    COMMENT "rnnc build: ${name}.o and ${name}.h"
    VERBATIM)
  set_source_files_properties("${obj}" PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)
  add_library(${name} STATIC "${obj}" "${dir}/${name}.h")
  set_target_properties(${name} PROPERTIES LINKER_LANGUAGE C)
  target_include_directories(${name} INTERFACE "${dir}")
endfunction()
