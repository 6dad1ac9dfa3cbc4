import { LabIcon } from '@jupyterlab/ui-components';

/** Three connected boxes: the Pipeline tab's icon (theme-coloured through jp-icon3). */
export const pipelineIcon = new LabIcon({
  name: 'jupyter-pipeline:pipeline',
  svgstr: `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <rect x="8" y="2" width="8" height="5" rx="1"/>
    <rect x="2" y="16" width="8" height="5" rx="1"/>
    <rect x="14" y="16" width="8" height="5" rx="1"/>
    <path d="M11.25 7h1.5v4h5.25a1 1 0 0 1 1 1v4h-1.5v-3.5h-11V16H5v-4a1 1 0 0 1 1-1h5.25z"/>
  </g>
</svg>`
});
