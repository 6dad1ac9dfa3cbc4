import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-pipeline:plugin',
  description: 'Tag cells into pipeline steps and see the inferred pipeline.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    console.log('jupyter-pipeline activated');
  }
};

export default plugin;
